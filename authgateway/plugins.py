"""The plugin manager and the one facade through which the rest of the gateway calls providers."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Iterable

import pluggy

from . import hookspecs, metrics
from .discovery import Discovery
from .errors import (
    ConfigError,
    ProviderMisconfiguredError,
    ProviderNotConfiguredError,
    ProviderUnavailableError,
    UnsupportedProviderError,
)
from .events import Event
from .providers import (
    Identity,
    IdentityError,
    ProviderConfig,
    ProviderError,
    ProviderInfo,
    ProviderMisconfigured,
    ProviderUnavailable,
    TokenSet,
)

log = logging.getLogger(__name__)

DEFAULT_PLUGINS = ("authgateway.oauth2",)
#: The hooks that act for one provider; each is routed to the plugin that registered it.
OPERATION_HOOKS = (
    "authgateway_authorization_url",
    "authgateway_exchange_code",
    "authgateway_refresh_token",
    "authgateway_revoke_token",
    "authgateway_fetch_identity",
)
REQUIRED_PROVIDER_SETTINGS = ("CLIENT_ID", "CLIENT_SECRET", "REDIRECT_URI")


def build_plugin_manager(
    *, load_entrypoints: bool = True, block: Iterable[str] = (), extra: Iterable[object] = ()
) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("authgateway")
    pm.add_hookspecs(hookspecs)
    for name in block:
        pm.set_blocked(name)
    if load_entrypoints:
        _load_entrypoints(pm)
    for plugin in extra:
        pm.register(plugin)
    for module_name in DEFAULT_PLUGINS:
        if not pm.is_blocked(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    pm.check_pending()
    return pm


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    # pluggy's load_setuptools_entrypoints cannot say which distribution failed to import;
    # an operator needs exactly that, so the loop is ours.
    for entry_point in importlib.metadata.entry_points(group="authgateway"):
        if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
            continue
        dist = entry_point.dist.name if entry_point.dist else "an unknown distribution"
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise ConfigError(
                f"The provider plugin '{entry_point.name}' from {dist} failed to import "
                f"({type(exc).__name__}: {exc}); fix or uninstall it, or block it with "
                f"AUTH_GATEWAY_BLOCK_PLUGINS={entry_point.name}."
            ) from exc
        pm.register(plugin, name=entry_point.name)


class Providers:
    """One typed method per hook. Nothing else touches ``pm.hook``: here ``None`` becomes
    "unknown provider" and a plugin's unexpected exception becomes a ``ProviderError``.

    Each operation for a provider reaches only the plugin that registered it and the core's
    default plugin (``trylast``): a plugin never answers for another plugin's provider, so it
    need not check ``provider.name``. The routed callers are built once, here."""

    def __init__(self, pm: pluggy.PluginManager, settings, timeout: float) -> None:
        self.pm = pm
        self._settings = settings
        self._timeout = timeout
        self.discovery = Discovery(timeout)
        self._infos: dict[str, ProviderInfo] = {}
        self._owners: dict[str, str] = {}
        for impl in pm.hook.authgateway_register_providers.get_hookimpls():
            for info in impl.function(settings=settings) or ():
                if info.name in self._infos:
                    raise ConfigError(
                        f"Two plugins register the provider '{info.name}': "
                        f"{self._owners[info.name]} and {impl.plugin_name}; uninstall or block one."
                    )
                self._infos[info.name] = info
                self._owners[info.name] = impl.plugin_name
        self._hooks = {name: self._routed_hooks(name) for name in self._infos}

    def _routed_hooks(self, name: str) -> dict[str, object]:
        keep = {self.pm.get_plugin(self._owners[name])}
        keep.update(self.pm.get_plugin(default) for default in DEFAULT_PLUGINS)
        others = [plugin for plugin in self.pm.get_plugins() if plugin not in keep]
        return {hook_name: metrics.upstream(name, hook_name,
                                            self.pm.subset_hook_caller(hook_name, others))
                for hook_name in OPERATION_HOOKS}

    def names(self) -> list[str]:
        return sorted(self._infos)

    def owner(self, name: str) -> str:
        return self._owners[name]

    def info(self, name: str) -> ProviderInfo:
        try:
            return self._infos[name]
        except KeyError:
            installed = ", ".join(self.names()) or "none"
            raise UnsupportedProviderError(
                f"The provider is not supported here; installed providers: {installed}."
            ) from None

    def resolved(self, name: str) -> ProviderInfo:
        """The provider as declared, completed from its discovery document when it has one.
        Raises ``ProviderUnavailable`` or ``ProviderMisconfigured`` when that cannot be read."""
        return self.discovery.resolve(self.info(name))

    def missing_settings(self, name: str) -> list[str]:
        """The settings the provider needs that are not set: the three every provider needs,
        then those it declares (``ProviderInfo.required_settings``)."""
        prefix = name.upper()
        wanted = [f"{prefix}_{key}" for key in REQUIRED_PROVIDER_SETTINGS]
        wanted += self.info(name).required_settings
        return [setting for setting in dict.fromkeys(wanted) if not self._settings.get(setting)]

    def config(self, name: str) -> ProviderConfig:
        info = self.info(name)
        missing = self.missing_settings(name)
        if missing:
            raise ProviderNotConfiguredError(
                f"The {info.display_name} provider is installed but not configured: "
                f"set {', '.join(missing)}."
            )
        prefix = name.upper()
        return ProviderConfig(
            client_id=str(self._settings.get(f"{prefix}_CLIENT_ID")),
            client_secret=str(self._settings.get(f"{prefix}_CLIENT_SECRET")),
            redirect_uri=str(self._settings.get(f"{prefix}_REDIRECT_URI")),
            timeout=self._timeout,
            settings={key: str(self._settings.get(key)) for key in info.required_settings},
        )

    def authorization_url(
        self, name: str, *, state: str, code_challenge: str, scopes: list[str], login_hint: str
    ) -> str:
        try:
            return self._call(
                "authgateway_authorization_url",
                name,
                state=state,
                code_challenge=code_challenge,
                scopes=scopes,
                login_hint=login_hint,
            )
        except ProviderMisconfigured as exc:
            log.error("OPERATOR ACTION NEEDED: %s", exc)
            raise ProviderMisconfiguredError(
                f"The gateway's settings for {self.info(name).display_name} do not match the "
                "provider; an operator must fix them (the gateway's log says how)."
            ) from None
        except ProviderError as exc:
            log.warning("cannot start a flow with %s: %s", name, exc)
            raise ProviderUnavailableError(
                f"{self.info(name).display_name} could not be reached; retry later."
            ) from None

    def exchange_code(self, name: str, *, code: str, code_verifier: str) -> TokenSet:
        return self._call("authgateway_exchange_code", name, code=code, code_verifier=code_verifier)

    def refresh(self, name: str, *, refresh_token: str) -> TokenSet:
        return self._call("authgateway_refresh_token", name, refresh_token=refresh_token)

    def revoke(self, name: str, *, token: str, token_type_hint: str) -> bool:
        try:
            self.resolved(name)
        except ProviderError as exc:
            log.warning("revocation at %s skipped: %s", name, exc)
            return False
        return self._call(
            "authgateway_revoke_token", name, token=token, token_type_hint=token_type_hint
        )

    def identity(self, name: str, *, tokens: TokenSet) -> Identity:
        return self._call("authgateway_fetch_identity", name, tokens=tokens)

    def announce(self, event: Event) -> None:
        """Tell every plugin that implements ``authgateway_event``; one that raises is logged
        and the others are still told."""
        for impl in self.pm.hook.authgateway_event.get_hookimpls():
            try:
                impl.function(event=event)
            except Exception:
                log.exception("plugin %s failed in authgateway_event for %s %s",
                              impl.plugin_name, event.type, event.id)

    def _call(self, hook_name: str, name: str, **kwargs):
        config = self.config(name)
        info = self.resolved(name)
        hook = self._hooks[name][hook_name]
        try:
            result = hook(provider=info, config=config, **kwargs)
        except ProviderError as exc:
            if isinstance(exc, (ProviderUnavailable, IdentityError)):
                # Endpoints or keys may have moved since the provider was discovered.
                self.discovery.invalidate(info)
            raise
        except Exception as exc:
            # A plugin bug must not look like a dead grant: treat it as transient, loudly.
            log.exception("provider plugin failed in %s for %s", hook_name, name)
            raise ProviderUnavailable(f"the {name} plugin failed", code="plugin_error") from exc
        if result is None:
            raise UnsupportedProviderError(f"No plugin implements {hook_name} for {name}.")
        return result
