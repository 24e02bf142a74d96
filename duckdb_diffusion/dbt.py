"""dbt-duckdb plugin: ``plugins: [{module: duckdb_diffusion.dbt}]`` in profiles.yml.

It installs the SQL functions on every connection dbt opens and on every cursor it hands to a
thread, so models can call ``train_latent_diffusion``, ``impute_latent_diffusion`` and
``synthesize_rows`` with ``{{ ref(...) }}``. Optional config: ``model_dir`` (store models as files).
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from .sql import install


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.model_dir = plugin_config.get("model_dir")

    def configure_connection(self, conn) -> None:
        install(conn, self.model_dir)

    def configure_cursor(self, cursor) -> None:
        # TEMP macros are per connection: each thread's cursor needs its own.
        install(cursor, self.model_dir)
