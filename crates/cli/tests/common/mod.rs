//! The CLI's integration tests see the testkit (`statecast_testkit`) through this module,
//! with one addition only this package can make: [`Start::start`], which runs the
//! `statecast` binary Cargo built for these tests.

pub use statecast_testkit::*;

/// `Server::start(args)`: the binary of this package, as a [`Server`].
pub trait Start {
    /// Starts the binary with `extra` arguments after `serve --listen .. --data-dir ..`.
    fn start(extra: &[&str]) -> Self;
}

impl Start for Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_binary(env!("CARGO_BIN_EXE_statecast"), extra)
    }
}
