"""Adding a hub (url and optional token, checked by connecting), its options (the poll
interval) and reauth when the hub refuses the token. The entry's unique id is the hub's
identity (identity.py), so the same hub is not added twice under two URLs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as vol
from homeassistant import config_entries
from homeassistant.core import callback
from homeassistant.data_entry_flow import FlowResult
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from .const import CONF_POLL_INTERVAL, DEFAULT_POLL_INTERVAL, DOMAIN
from .hub import AuthError, HubError, normalize_url
from .identity import async_check_hub


class StatecastConfigFlow(config_entries.ConfigFlow, domain=DOMAIN):
    VERSION = 1

    def __init__(self) -> None:
        self._reauth_entry: config_entries.ConfigEntry | None = None

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: config_entries.ConfigEntry) -> StatecastOptionsFlow:
        return StatecastOptionsFlow(config_entry)

    async def _check(self, url: str, token: str | None, errors: dict[str, str]) -> str | None:
        """The hub's identity, or None with `errors` filled in."""
        try:
            return await async_check_hub(async_get_clientsession(self.hass), url, token)
        except AuthError:
            errors["base"] = "invalid_auth"
        except HubError:
            errors["base"] = "cannot_connect"
        return None

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        errors: dict[str, str] = {}
        if user_input is not None:
            url = normalize_url(user_input["url"])
            token = user_input.get("token") or None
            identity = await self._check(url, token, errors)
            if identity is not None:
                await self.async_set_unique_id(identity)
                self._abort_if_unique_id_configured(updates={"url": url, "token": token})
                data = {"url": url, "token": token}
                return self.async_create_entry(title=f"statecast {url.split('://', 1)[-1]}", data=data)
        schema = vol.Schema(
            {
                vol.Required("url", default=(user_input or {}).get("url", "http://")): str,
                vol.Optional("token"): str,
            }
        )
        return self.async_show_form(step_id="user", data_schema=schema, errors=errors)

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> FlowResult:
        self._reauth_entry = self.hass.config_entries.async_get_entry(self.context["entry_id"])
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        errors: dict[str, str] = {}
        entry = self._reauth_entry
        assert entry is not None
        if user_input is not None:
            token = user_input.get("token") or None
            identity = await self._check(entry.data["url"], token, errors)
            if identity is not None:
                self.hass.config_entries.async_update_entry(entry, data={**entry.data, "token": token})
                await self.hass.config_entries.async_reload(entry.entry_id)
                return self.async_abort(reason="reauth_successful")
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=vol.Schema({vol.Optional("token"): str}),
            errors=errors,
            description_placeholders={"url": entry.data["url"]},
        )


class StatecastOptionsFlow(config_entries.OptionsFlow):
    def __init__(self, config_entry: config_entries.ConfigEntry) -> None:
        self.entry = config_entry

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        if user_input is not None:
            return self.async_create_entry(title="", data=user_input)
        current = self.entry.options.get(CONF_POLL_INTERVAL, DEFAULT_POLL_INTERVAL)
        schema = vol.Schema(
            {vol.Required(CONF_POLL_INTERVAL, default=current): vol.All(vol.Coerce(int), vol.Range(min=1, max=3600))}
        )
        return self.async_show_form(step_id="init", data_schema=schema)
