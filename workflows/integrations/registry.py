"""The integrations a project can install: template files, package.json additions, env vars.

Adding one is adding an entry here. Files are written only where absent (the user's edits win);
package.json dependencies and scripts are merged without overriding what the app already has;
env vars are added to `.env` without changing existing values (a secret, once generated, stays).

Options are data: each option's schema has a `pattern` that must match the WHOLE value (it is
checked with re.fullmatch as well as by JSON Schema, whose `$` would accept a trailing newline
in Python) and a `description` that says what is accepted; values reach `.env` only through
the dotenv serializer (dotenv.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Options = dict[str, Any]


@dataclass(frozen=True)
class IntegrationSpec:
    key: str
    name: str
    category: str
    description: str
    files: dict[str, str] = field(default_factory=dict)
    dependencies: dict[str, str] = field(default_factory=dict)
    dev_dependencies: dict[str, str] = field(default_factory=dict)
    scripts: dict[str, str] = field(default_factory=dict)
    # name → function of the options giving the value (called only when the name is absent)
    env: dict[str, Callable[[Options], str]] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    options_schema: dict[str, Any] = field(default_factory=lambda: {
        "type": "object", "additionalProperties": False, "properties": {}})

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "category": self.category,
                "description": self.description, "requires": list(self.requires),
                "env": sorted(self.env), "files": sorted(self.files),
                "options_schema": self.options_schema}


VITE_CONFIG = """import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  plugins: [react()],
  server: { host: "0.0.0.0", port: Number(process.env.PORT) || 3000 },
  preview: { host: "0.0.0.0", port: Number(process.env.PORT) || 3000 },
});
"""

INDEX_HTML = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="UTF-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1.0" />
    <title>App</title>
  </head>
  <body>
    <div id="root"></div>
    <script type="module" src="/src/main.jsx"></script>
  </body>
</html>
"""

MAIN_JSX = """import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import App from "./App.jsx";

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
"""

APP_JSX = """export default function App() {
  return (
    <main>
      <h1>Hello from Weldr</h1>
    </main>
  );
}
"""

DB_JS = """import pg from "pg";

// One pool per process; DATABASE_URL comes from .env (written by the database integration).
export const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });

export function query(text, params) {
  return pool.query(text, params);
}
"""

SCHEMA_SQL = """-- The app's tables; Better Auth creates its own ("user", "session", ...).
CREATE TABLE IF NOT EXISTS app_meta (key text PRIMARY KEY, value text NOT NULL);
"""

AUTH_JS = """import { betterAuth } from "better-auth";
import { pool } from "./db.js";

// BETTER_AUTH_SECRET and BETTER_AUTH_URL come from .env (written by the auth integration).
export const auth = betterAuth({
  database: pool,
  secret: process.env.BETTER_AUTH_SECRET,
  baseURL: process.env.BETTER_AUTH_URL,
  emailAndPassword: { enabled: true },
});
"""

AUTH_CLIENT_JS = """import { createAuthClient } from "better-auth/react";

export const authClient = createAuthClient();
"""


def _option(name: str, default: str) -> Callable[[Options], str]:
    return lambda options: str(options.get(name) or default)


# RFC 3986 characters minus `$` and `'` (see dotenv.py); anything else is percent-encoded.
URL_CHARS = r"[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]"


def _url_option(schemes: str, example: str) -> dict[str, Any]:
    return {"type": "string", "maxLength": 2048,
            "pattern": f"^{schemes}://{URL_CHARS}+$",
            "description": f"a {example} URL of printable ASCII without spaces, quotes, `$` or "
                           "`\\` (percent-encode them, e.g. `$` as %24)"}


REGISTRY: dict[str, IntegrationSpec] = {spec.key: spec for spec in (
    IntegrationSpec(
        key="frontend", name="Vite + React", category="frontend",
        description="A Vite + React single-page app: the base every other integration builds on.",
        files={"index.html": INDEX_HTML, "vite.config.js": VITE_CONFIG,
               "src/main.jsx": MAIN_JSX, "src/App.jsx": APP_JSX},
        dependencies={"react": "^19.0.0", "react-dom": "^19.0.0"},
        dev_dependencies={"vite": "^6.0.0", "@vitejs/plugin-react": "^4.3.0"},
        scripts={"dev": "vite", "build": "vite build", "preview": "vite preview"},
    ),
    IntegrationSpec(
        key="database", name="PostgreSQL", category="database",
        description="A PostgreSQL connection pool (node-postgres) and a schema file.",
        files={"src/server/db.js": DB_JS, "db/schema.sql": SCHEMA_SQL},
        dependencies={"pg": "^8.13.0"},
        scripts={"db:schema": "psql \"$DATABASE_URL\" -f db/schema.sql"},
        env={"DATABASE_URL": _option("database_url", "postgres://postgres@localhost:5432/app")},
        options_schema={"type": "object", "additionalProperties": False, "properties": {
            "database_url": _url_option("postgres(ql)?", "postgres://")}},
    ),
    IntegrationSpec(
        key="auth", name="Better Auth", category="authentication",
        description="Email and password sign-in with Better Auth, stored in the PostgreSQL layer.",
        files={"src/server/auth.js": AUTH_JS, "src/lib/auth-client.js": AUTH_CLIENT_JS},
        dependencies={"better-auth": "^1.2.0"},
        env={"BETTER_AUTH_SECRET": lambda options: secrets.token_urlsafe(32),
             "BETTER_AUTH_URL": _option("base_url", "http://localhost:3000")},
        requires=("database",),
        options_schema={"type": "object", "additionalProperties": False, "properties": {
            "base_url": _url_option("https?", "http(s)://")}},
    ),
)}


def integration_spec(key: str) -> IntegrationSpec | None:
    return REGISTRY.get(key)
