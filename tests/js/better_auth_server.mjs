// The platform's authentication as the tests meet it: the real `better-auth` npm package with
// the bearer, jwt and api-key plugins, on the test PostgreSQL, served on a loopback port.
//
//   DATABASE_URL=postgres://… BETTER_AUTH_SECRET=… node tests/js/better_auth_server.mjs
//
// It runs Better Auth's own migrations (programmatically: `npx auth migrate` crashes on
// Node 20), listens on a free 127.0.0.1 port and prints one JSON line
// `{"ready": true, "url": "http://127.0.0.1:PORT"}` on stdout. Better Auth's real endpoints are
// under /api/auth/* (get-session, token, jwks, sign-out, …). Helpers for the tests call Better
// Auth's server API the way a platform would:
//   POST /test/sign-up {email, password, name} -> {token, user_id, set_cookie}
//   POST /test/api-key {user_id}               -> {key, id}
//   POST /test/sign-jwt {payload}              -> {token}  (signed with the JWKS's real key)
// SIGTERM closes the server and the pool.
//
// Configured the way a platform deploys it, from the same variables the agent reads (all
// optional; unset means Better Auth's defaults, exactly as before):
//   BETTER_AUTH_COOKIE_PREFIX=weldr                  -> advanced.cookiePrefix
//   BETTER_AUTH_BASE_PATH=/auth                       -> basePath
//   BETTER_AUTH_TABLES=user=users,session=sessions,…  -> modelName of each model (plugins' too)
//   BETTER_AUTH_COLUMNS=snake_case                    -> every field's column name in snake_case
// Table and column names go through Better Auth's own `modelName`/`fields` options (core models
// and the jwt and api-key plugins' `schema` option), which give the database the shape a Drizzle
// schema with plural tables and snake_case columns gives it, without a second ORM here.
//
// `--plan` prints what Better Auth's migrations would still do to DATABASE_URL, as JSON, and
// `--migrate` runs them; both exit without serving. The tests use them to prove that the
// agent's mirror of these tables is exactly what Better Auth creates, in either order.

import http from "node:http";

import { apiKey } from "@better-auth/api-key";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { getAuthTables } from "better-auth/db";
import { toNodeHandler } from "better-auth/node";
import { bearer, jwt } from "better-auth/plugins";
import pg from "pg";

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`better_auth_server: ${name} must be set`);
    process.exit(2);
  }
  return value;
}

const databaseUrl = required("DATABASE_URL");
const secret = required("BETTER_AUTH_SECRET");
const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });

const CORE_MODELS = ["user", "session", "account", "verification"];

function parseTables(raw) {
  const tables = {};
  for (const item of (raw ?? "").split(",").filter((i) => i.trim())) {
    const [model, table] = item.split("=").map((part) => part.trim());
    tables[model] = table;
  }
  return tables;
}

const snake = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

// { model: { modelName?, fields? } } for the configured tables and column naming.
function schemaOverrides(baseOptions) {
  const tables = parseTables(process.env.BETTER_AUTH_TABLES);
  const snakeCase = process.env.BETTER_AUTH_COLUMNS === "snake_case";
  const overrides = {};
  for (const [model, table] of Object.entries(getAuthTables(baseOptions))) {
    const fields = {};
    if (snakeCase) {
      for (const field of Object.keys(table.fields)) {
        if (snake(field) !== field) fields[field] = snake(field);
      }
    }
    overrides[model] = { ...(tables[model] ? { modelName: tables[model] } : {}), fields };
  }
  return overrides;
}

function options(baseURL, overrides = {}) {
  const cookiePrefix = process.env.BETTER_AUTH_COOKIE_PREFIX;
  const basePath = process.env.BETTER_AUTH_BASE_PATH;
  const core = Object.fromEntries(CORE_MODELS.filter((m) => overrides[m]).map((m) => [m, overrides[m]]));
  return {
    baseURL,
    ...(basePath ? { basePath } : {}),
    secret,
    database: pool,
    ...core,
    emailAndPassword: { enabled: true, autoSignIn: true },
    plugins: [
      bearer(),
      jwt(overrides.jwks ? { schema: { jwks: overrides.jwks } } : {}),
      apiKey(overrides.apikey ? { schema: { apikey: overrides.apikey } } : {}),
    ],
    telemetry: { enabled: false },
    // The tests sign up many users from one address; Better Auth's limiter would refuse them.
    rateLimit: { enabled: false },
    logger: { level: "warn" },
    ...(cookiePrefix ? { advanced: { cookiePrefix } } : {}),
  };
}

function makeAuth(baseURL) {
  return betterAuth(options(baseURL, schemaOverrides(options(baseURL))));
}

async function readJson(request) {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {};
}

function send(response, status, body) {
  response.writeHead(status, { "content-type": "application/json" });
  response.end(JSON.stringify(body));
}

async function signUp(auth, body) {
  const { headers, response } = await auth.api.signUpEmail({
    body: { email: body.email, password: body.password, name: body.name ?? body.email },
    returnHeaders: true,
  });
  return { token: response.token, user_id: response.user.id, set_cookie: headers.get("set-cookie") };
}

async function createKey(auth, body) {
  const created = await auth.api.createApiKey({
    body: { userId: body.user_id, name: body.name ?? "tests" },
  });
  return { key: created.key, id: created.id };
}

async function signJwt(auth, body) {
  return { token: (await auth.api.signJWT({ body: { payload: body.payload } })).token };
}

async function plan() {
  const migrations = await getMigrations(makeAuth("http://127.0.0.1").options);
  const sql = await migrations.compileMigrations();
  const summary = {
    to_be_created: migrations.toBeCreated.map((t) => t.table),
    to_be_added: migrations.toBeAdded.map((t) => ({ table: t.table, fields: Object.keys(t.fields) })),
    to_be_added_indexes: migrations.toBeAddedIndexes.map((i) => i.name),
    schema_problems: migrations.schemaProblems,
    sql: sql === ";" ? "" : sql,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  await pool.end();
}

if (process.argv.includes("--plan")) {
  await plan();
  process.exit(0);
}
if (process.argv.includes("--migrate")) {
  await (await getMigrations(makeAuth("http://127.0.0.1").options)).runMigrations();
  await pool.end();
  process.exit(0);
}

let auth = null;
let authHandler = null;
const server = http.createServer(async (request, response) => {
  try {
    if (request.method === "POST" && request.url === "/test/sign-up") {
      return send(response, 200, await signUp(auth, await readJson(request)));
    }
    if (request.method === "POST" && request.url === "/test/api-key") {
      return send(response, 200, await createKey(auth, await readJson(request)));
    }
    if (request.method === "POST" && request.url === "/test/sign-jwt") {
      return send(response, 200, await signJwt(auth, await readJson(request)));
    }
    return authHandler(request, response);
  } catch (error) {
    console.error(error);
    return send(response, 500, { error: String(error?.message ?? error) });
  }
});

server.listen(0, "127.0.0.1", async () => {
  const url = `http://127.0.0.1:${server.address().port}`;
  // The JWT's issuer and audience are the base URL, known only once the port is chosen.
  auth = makeAuth(url);
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
  authHandler = toNodeHandler(auth);
  process.stdout.write(`${JSON.stringify({ ready: true, url })}\n`);
});

function shutdown() {
  server.close(() => pool.end().then(() => process.exit(0)));
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
