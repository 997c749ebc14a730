"""Configuration: `load_settings()` returns validated Settings."""

from trainhost.config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
