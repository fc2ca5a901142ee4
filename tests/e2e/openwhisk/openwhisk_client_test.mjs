// The official `openwhisk` npm client (3.21.x) against stoke-gateway, run by
// tests/e2e/gateway_openwhisk_test.sh with a real agent behind the gateway:
// actions of three kinds created, updated, read, listed and deleted, with
// bound parameters and annotations;
// invocations blocking and not; activations, results and logs read back with
// paging; another namespace's key sees none of it; bad input gets OpenWhisk's
// error shape and status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const openwhisk = require('openwhisk');

const apihost = process.env.OW_APIHOST;
const keyA = process.env.OW_KEY_A;
const keyB = process.env.OW_KEY_B;
const zipBase64 = process.env.OW_PYTHON_ZIP_BASE64;  // a zip with __main__.py
const nativeScript = process.env.OW_NATIVE_SCRIPT;   // an actionloop executable, as text
assert.ok(apihost && keyA && keyB && zipBase64 && nativeScript, 'the driver script sets the environment');

const ow = openwhisk({ apihost, api_key: keyA });
const other = openwhisk({ apihost, api_key: keyB });

const pythonCode = 'def main(args):\n    print("python says hi")\n    return {"greeting": "hello " + args.get("name", "stranger")}\n';
const nodeCode = 'function main(args) { console.log("node says hi"); return { sum: (args.a || 0) + (args.b || 0) }; }\n';

async function until(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > end) throw new Error(`${what}: ${e.message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function rawFetch(path, { method = 'GET', key = keyA, body, headers = {} } = {}) {
  const h = { ...headers };
  if (key) h.authorization = 'Basic ' + Buffer.from(key).toString('base64');
  if (body !== undefined && !h['content-type']) h['content-type'] = 'application/json';
  const res = await fetch(apihost + path, { method, headers: h, body });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: res.status, json };
}

test('namespaces: each key sees exactly its own namespace', async () => {
  assert.deepEqual(await ow.namespaces.list(), ['alpha']);
  assert.deepEqual(await other.namespaces.list(), ['beta']);
});

test('actions: python, node and native are created, read, listed, updated and deleted', async () => {
  const py = await ow.actions.create({ name: 'greet', action: pythonCode, kind: 'python:3' });
  assert.equal(py.name, 'greet');
  assert.equal(py.namespace, 'alpha');
  assert.equal(py.exec.kind, 'python:3');
  await ow.actions.create({ name: 'add', action: nodeCode, kind: 'nodejs:20' });
  await ow.actions.create({ name: 'zipped', action: Buffer.from(zipBase64, 'base64'), kind: 'python:3.11' });
  await ow.actions.create({ name: 'native', action: nativeScript, kind: 'blackbox' });

  const got = await ow.actions.get({ name: 'add' });
  assert.equal(got.exec.kind, 'nodejs:20');
  assert.equal(got.version, '0.0.1');
  assert.ok(got.limits.timeout > 0 && got.limits.memory > 0);

  const names = (await ow.actions.list()).map((a) => a.name).sort();
  assert.deepEqual(names, ['add', 'greet', 'native', 'zipped']);
  const page = await ow.actions.list({ limit: 2, skip: 1 });
  assert.equal(page.length, 2);

  // Creating over an existing action is a conflict; overwrite makes version 2.
  await assert.rejects(ow.actions.create({ name: 'add', action: nodeCode }), (e) => e.statusCode === 409);
  const updated = await ow.actions.update({ name: 'add', action: nodeCode.replace('(args.a || 0)', '(args.a || 0) * 10'), kind: 'nodejs:20' });
  assert.equal(updated.version, '0.0.2');

  // Bound parameters and annotations are kept; an invocation's own params win.
  const bound = await ow.actions.create({ name: 'bound', action: pythonCode, kind: 'python:3',
    params: { name: 'bound default' }, annotations: { 'web-export': true, team: 'docs' } });
  assert.deepEqual(bound.parameters, [{ key: 'name', value: 'bound default' }]);
  assert.ok(bound.annotations.some((a) => a.key === 'team' && a.value === 'docs'));
  assert.deepEqual((await ow.actions.get({ name: 'bound' })).parameters, [{ key: 'name', value: 'bound default' }]);
  assert.deepEqual(await ow.actions.invoke({ name: 'bound', blocking: true, result: true }), { greeting: 'hello bound default' });
  assert.deepEqual(await ow.actions.invoke({ name: 'bound', params: { name: 'mine' }, blocking: true, result: true }),
    { greeting: 'hello mine' });
  await ow.actions.delete({ name: 'bound' });

  await ow.actions.create({ name: 'doomed', action: pythonCode, kind: 'python:3' });
  const deleted = await ow.actions.delete({ name: 'doomed' });
  assert.equal(deleted.name, 'doomed');
  await assert.rejects(ow.actions.get({ name: 'doomed' }), (e) => e.statusCode === 404);
});

test('invocations: blocking with result, blocking with the activation, and non-blocking', async () => {
  assert.deepEqual(await ow.actions.invoke({ name: 'greet', params: { name: 'ow' }, blocking: true, result: true }),
    { greeting: 'hello ow' });
  assert.deepEqual(await ow.actions.invoke({ name: 'add', params: { a: 2, b: 3 }, blocking: true, result: true }), { sum: 23 });
  assert.deepEqual(await ow.actions.invoke({ name: 'zipped', params: {}, blocking: true, result: true }), { zipped: true });
  assert.deepEqual(await ow.actions.invoke({ name: 'native', params: { x: 1 }, blocking: true, result: true }),
    { native: true, got: { x: 1 } });

  const activation = await ow.actions.invoke({ name: 'greet', params: { name: 'record' }, blocking: true });
  assert.equal(activation.response.status, 'success');
  assert.equal(activation.response.success, true);
  assert.deepEqual(activation.response.result, { greeting: 'hello record' });
  assert.equal(activation.namespace, 'alpha');
  assert.equal(activation.name, 'greet');
  assert.ok(activation.annotations.some((a) => a.key === 'path' && a.value === 'alpha/greet'));
  assert.ok(typeof activation.startKind === 'string' && activation.startKind.length > 0);

  const accepted = await ow.actions.invoke({ name: 'greet', params: { name: 'later' } });
  assert.match(accepted.activationId, /^[0-9a-f]{32}$/);
  const later = await until('the async activation', () => ow.activations.get({ activationId: accepted.activationId }));
  assert.deepEqual(later.response.result, { greeting: 'hello later' });
  const result = await ow.activations.result({ activationId: accepted.activationId });
  assert.deepEqual(result.result, { greeting: 'hello later' });
  const logs = await ow.activations.logs({ activationId: accepted.activationId });
  assert.ok(logs.logs.some((l) => l.includes('python says hi')), JSON.stringify(logs));
});

test('activations: listed newest first, by name, with limit and skip', async () => {
  for (let i = 0; i < 3; i++) await ow.actions.invoke({ name: 'add', params: { a: i }, blocking: true });
  const adds = await ow.activations.list({ name: 'add', limit: 2 });
  assert.equal(adds.length, 2);
  assert.ok(adds.every((a) => a.name === 'add'));
  assert.ok(adds[0].start >= adds[1].start);
  const skipped = await ow.activations.list({ name: 'add', limit: 2, skip: 1 });
  assert.equal(skipped[0].activationId, adds[1].activationId);
  const all = await ow.activations.list({ limit: 100 });
  assert.ok(all.length >= 8);
});

test('another namespace sees none of it', async () => {
  assert.deepEqual(await other.actions.list(), []);
  await assert.rejects(other.actions.get({ name: 'greet' }), (e) => e.statusCode === 404);
  await assert.rejects(other.actions.invoke({ name: 'greet', blocking: true }), (e) => e.statusCode === 404);
  assert.deepEqual(await other.activations.list(), []);
  const mine = await ow.activations.list({ limit: 1 });
  await assert.rejects(other.activations.get({ activationId: mine[0].activationId }), (e) => e.statusCode === 404);
  // Naming the other namespace in the path does not help either.
  const crossed = await rawFetch('/api/v1/namespaces/alpha/actions', { key: keyB });
  assert.equal(crossed.status, 403);
  assert.ok(typeof crossed.json.error === 'string' && typeof crossed.json.code === 'string');
});

test('bad input gets the OpenWhisk error shape and status', async () => {
  const noKey = await rawFetch('/api/v1/namespaces/_/actions', { key: null });
  assert.equal(noKey.status, 401);
  const badKey = await rawFetch('/api/v1/namespaces/_/actions', { key: keyA.slice(0, -4) + 'zzzz' });
  assert.equal(badKey.status, 401);
  assert.equal(typeof badKey.json.error, 'string');
  const malformed = await rawFetch('/api/v1/namespaces/_/actions/broken', { method: 'PUT', body: '{"exec": ' });
  assert.equal(malformed.status, 400);
  const badKind = await rawFetch('/api/v1/namespaces/_/actions/cobol', {
    method: 'PUT', body: JSON.stringify({ exec: { kind: 'cobol:85', code: 'x' } }) });
  assert.equal(badKind.status, 400);
  const badName = await rawFetch('/api/v1/namespaces/_/actions/..%2Fescape', {
    method: 'PUT', body: JSON.stringify({ exec: { kind: 'python:3', code: pythonCode } }) });
  assert.ok(badName.status === 400 || badName.status === 404, String(badName.status));
  const huge = await rawFetch('/api/v1/namespaces/_/actions/greet?blocking=true', {
    method: 'POST', body: JSON.stringify({ pad: 'x'.repeat(6 << 20) }) });
  assert.equal(huge.status, 413);
  const appError = await rawFetch('/api/v1/namespaces/_/actions/oops?overwrite=true', {
    method: 'PUT', body: JSON.stringify({ exec: { kind: 'python:3', code: 'def main(a):\n    return {"error": "nope"}\n' } }) });
  assert.equal(appError.status, 200);
  const failed = await rawFetch('/api/v1/namespaces/_/actions/oops?blocking=true&result=true', { method: 'POST', body: '{}' });
  assert.equal(failed.status, 502);
  assert.deepEqual(failed.json, { error: 'nope' });
  const unknown = await rawFetch('/api/v1/namespaces/_/triggers', {});
  assert.equal(unknown.status, 404);
  // The gateway is still up and serving.
  assert.deepEqual(await ow.actions.invoke({ name: 'greet', params: { name: 'again' }, blocking: true, result: true }),
    { greeting: 'hello again' });
});
