import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect } from '../statecast.js';
import { startHub, makeDataDir, removeDir, waitFor, rest, freePort } from '../test-support/hub.mjs';

let hub;
let dataDir;
let client;

after(async () => {
  if (client) client.close();
  if (hub) await hub.stop();
  await removeDir(dataDir);
});

// Retries a REST write until the hub acknowledges it (the hub may be down meanwhile).
async function patchUntilAcked(base, topic, patch) {
  for (;;) {
    try {
      const res = await rest(base, 'PATCH', `/api/state/${topic}`, patch);
      if (res.status === 200) return res.body;
    } catch {
      // connection refused / reset while the hub restarts
    }
    await new Promise((r) => setTimeout(r, 20)); // retry pacing, not synchronisation
  }
}

test('4. hub restart mid-stream: the client resumes with since and misses no rev', { timeout: 120000 }, async () => {
  dataDir = await makeDataDir();
  const port = await freePort();
  hub = await startHub({ port, dataDir });
  const base = hub.base;
  const topic = 'restart/counter';
  await rest(base, 'PUT', `/api/state/${topic}`, { n: 0 });

  client = connect(`ws://127.0.0.1:${port}/ws`, { WebSocket, backoffMin: 50, backoffMax: 400, pollAfterFailures: 1000 });
  const statuses = [];
  const log = []; // { rev, type, epoch } epoch = connection generation
  let epoch = 0;
  client.on('status', (s) => {
    statuses.push(s);
    if (s === 'connecting') epoch++;
  });
  client.subscribe('restart/#', (t, state, change) => {
    if (t === topic) log.push({ rev: change.rev, type: change.type, n: state && state.n, epoch });
  });
  await waitFor(() => client.status === 'open' && client.rev(topic) === 1, { what: 'initial snapshot' });

  let restarted = false;
  let restartDone;
  const writer = (async () => {
    for (let i = 1; i <= 200; i++) {
      await patchUntilAcked(base, topic, { n: i });
      if (i === 50) {
        // stop the hub in the middle of the stream and bring it back on the same port and data
        restartDone = (async () => {
          await hub.stop('SIGTERM');
          await waitFor(() => epoch >= 1, { what: 'client notices the drop' });
          hub = await startHub({ port, dataDir });
          restarted = true;
        })();
      }
    }
  })();
  await writer;
  await restartDone;
  assert.ok(restarted);

  const final = await rest(base, 'GET', `/api/state/${topic}`);
  assert.equal(final.body.state.n, 200);
  await waitFor(() => client.status === 'open' && client.rev(topic) === final.body.rev, { what: `client at rev ${final.body.rev}`, timeout: 20000 });
  assert.deepEqual(client.state(topic), final.body.state);

  // every rev from the last one seen before the drop to the final one was seen after it
  const before = log.filter((e) => e.epoch === 0);
  const afterDrop = log.filter((e) => e.epoch >= 1);
  assert.ok(before.length > 0 && afterDrop.length > 0, `before=${before.length} after=${afterDrop.length}`);
  const lastBefore = before[before.length - 1].rev;
  // Walk what the callback saw after the drop: each patch must follow the previous rev by
  // one; a snapshot may cover a jump only because the hub had no history to replay (the
  // hub keeps history in memory, so right after a restart it answers `since` with a snapshot).
  let expected = lastBefore;
  const jumps = [];
  for (const e of afterDrop) {
    if (e.type === 'patch') {
      assert.equal(e.rev, expected + 1, `patch rev ${e.rev} after ${expected}: ${JSON.stringify(log.slice(before.length - 3, before.length + 4))}`);
    } else {
      assert.equal(e.type, 'snapshot');
      assert.ok(e.rev >= expected, `snapshot rev ${e.rev} went back from ${expected}`);
      if (e.rev > expected + 1) jumps.push([expected, e.rev]);
    }
    expected = e.rev;
  }
  assert.equal(expected, final.body.rev);
  const snapshots = afterDrop.filter((e) => e.type === 'snapshot');
  assert.ok(snapshots.length <= 1, `one resume, at most one snapshot: ${JSON.stringify(snapshots)}`);
  console.log(`# last rev before the drop ${lastBefore}, after: ${afterDrop.length} changes, first ${JSON.stringify(afterDrop[0])}, jumps ${JSON.stringify(jumps)}, final ${final.body.rev}, statuses ${statuses.join(',')}`);
  // revs never went back and the mirror moved by exactly one per patch
  for (let k = 1; k < log.length; k++) assert.ok(log[k].rev > log[k - 1].rev, `rev order at ${k}: ${log[k - 1].rev} -> ${log[k].rev}`);
  assert.ok(statuses.includes('connecting') && statuses[statuses.length - 1] === 'open', statuses.join(','));
});
