#!/usr/bin/env node
// Acquire a keygen-agent lease, print the entitlements, hold it until
// interrupted. Core modules only; see docs/protocol.md. With --public-key
// (the account's Ed25519 key) and --fingerprint (this machine's), the lease's
// evidence is verified as docs/protocol.md "Verifying a lease" describes.
//
// Exit codes: 0 released on Ctrl-C, 4 agent unreachable, 5 no free seat or
// lease revoked, 6 the lease's evidence does not verify, 1 other errors.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const { parseArgs } = require('node:util');

const PROTOCOL = 1;

function defaultPath() {
  if (process.env.KEYGEN_AGENT_SOCKET) return process.env.KEYGEN_AGENT_SOCKET;
  if (process.platform === 'win32') return '\\\\.\\pipe\\keygen-agent';
  if (process.platform === 'darwin') return '/var/run/keygen-agent/agent.sock';
  return '/run/keygen-agent/agent.sock';
}

class AgentError extends Error {
  constructor(err) {
    const data = err.data || {};
    super(`${err.message} (${data.code || 'INTERNAL'})`);
    this.code = data.code || 'INTERNAL';
    this.data = data;
  }
}

// Approximate wall-clock start of this process: no evidence about it can
// be signed earlier.
const STARTED = Date.now() - process.uptime() * 1000;

class VerifyError extends Error {
  constructor(check, detail) {
    super(`${check}: ${detail}`);
    this.check = check;
  }
}

// ownProcess is "<pid>@<start time>" as the agent writes it; the start time
// is only read on Linux (field 22 of /proc/self/stat).
function ownProcess() {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).trim().split(/\s+/);
    return { pid: String(process.pid), start: fields[19] };
  } catch (_) {
    return { pid: String(process.pid), start: null };
  }
}

function publicKey(s) {
  s = s.trim();
  if (/^[0-9a-fA-F]{64}$/.test(s)) {
    const der = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(s, 'hex')]);
    return crypto.createPublicKey({ key: der, format: 'der', type: 'spki' });
  }
  if (s.startsWith('-----BEGIN')) return crypto.createPublicKey(s);
  return crypto.createPublicKey({ key: Buffer.from(s, 'base64'), format: 'der', type: 'spki' });
}

// verifyLease implements the checks of docs/protocol.md "Verifying a lease".
function verifyLease(lease, opts) {
  const skew = 5 * 60 * 1000;
  const now = Date.now();
  const ev = lease.evidence;
  if (!ev || !['signed', 'offline', 'pending'].includes(ev.status)) throw new VerifyError('evidence', 'the lease carries no evidence');
  if (ev.status === 'pending') throw new VerifyError('pending', 'Keygen has not confirmed the lease yet');
  if (ev.status === 'offline' && opts.requireOnline) throw new VerifyError('offline', 'granted offline');
  // Machine file: signature, validity, this machine.
  const text = (ev.machine_file || '').trim();
  const begin = '-----BEGIN MACHINE FILE-----';
  const end = '-----END MACHINE FILE-----';
  if (!text.startsWith(begin) || !text.endsWith(end)) throw new VerifyError('machine_file', 'no machine file');
  let env;
  try {
    env = JSON.parse(Buffer.from(text.slice(begin.length, text.length - end.length).replace(/\s+/g, ''), 'base64').toString('utf8'));
  } catch (_) {
    throw new VerifyError('machine_file', 'the envelope is not JSON');
  }
  if (env.alg !== 'base64+ed25519') throw new VerifyError('machine_file', `algorithm ${env.alg}`);
  if (!crypto.verify(null, Buffer.from('machine/' + env.enc), opts.key, Buffer.from(env.sig || '', 'base64'))) {
    throw new VerifyError('machine_file', 'the signature does not verify');
  }
  const mf = JSON.parse(Buffer.from(env.enc, 'base64').toString('utf8'));
  if (!mf.data || mf.data.type !== 'machines') throw new VerifyError('machine_file', 'not a machine document');
  const expiry = mf.meta && mf.meta.expiry ? Date.parse(mf.meta.expiry) : null;
  if (expiry !== null && now > expiry) throw new VerifyError('expired', `machine file expired ${mf.meta.expiry}`);
  if (mf.meta && Date.parse(mf.meta.issued) - now > skew) throw new VerifyError('expired', 'machine file issued in the future');
  const comps = (mf.included || []).filter((r) => r.type === 'components').map((r) => r.attributes.fingerprint);
  if (!opts.fingerprints.includes(mf.data.attributes.fingerprint) && !comps.some((c) => opts.components.includes(c))) {
    throw new VerifyError('fingerprint', 'the machine file is for another machine');
  }
  if (ev.status === 'offline') return { offline: true, machine: mf.data.id };
  // The process document: digest, signature, content.
  const p = ev.process || {};
  const body = Buffer.from(p.body || '', 'base64');
  if (p.digest !== 'sha-256=' + crypto.createHash('sha256').update(body).digest('base64')) {
    throw new VerifyError('digest', 'the Digest does not match the body');
  }
  const params = {};
  for (const m of (p.signature || '').matchAll(/(\w+)="([^"]*)"/g)) if (!(m[1] in params)) params[m[1]] = m[2];
  if (params.algorithm && params.algorithm !== 'ed25519') throw new VerifyError('signature', `algorithm ${params.algorithm}`);
  const signing = `(request-target): ${p.request_target}\nhost: ${p.host}\ndate: ${p.date}\ndigest: ${p.digest}`;
  if (!crypto.verify(null, Buffer.from(signing), opts.key, Buffer.from(params.signature || '', 'base64'))) {
    throw new VerifyError('signature', 'the signature does not verify');
  }
  let doc;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch (_) {
    throw new VerifyError('document', 'the body is not JSON');
  }
  const d = doc.data;
  if (!d || d.type !== 'processes') throw new VerifyError('document', 'not a process document');
  const attrs = d.attributes || {};
  const rel = d.relationships || {};
  const me = ownProcess();
  const [pid, start] = String(attrs.pid).split('@');
  if (pid !== me.pid || (me.start !== null && start !== me.start) || attrs.status === 'DEAD') {
    throw new VerifyError('process', `the process is ${attrs.pid}, not this one`);
  }
  if (!attrs.metadata || attrs.metadata.leaseId !== lease.lease_id) throw new VerifyError('lease', 'another lease');
  const mid = rel.machine && rel.machine.data && rel.machine.data.id;
  const lid = rel.license && rel.license.data && rel.license.data.id;
  const mlid = mf.data.relationships && mf.data.relationships.license && mf.data.relationships.license.data;
  if (mid !== mf.data.id || (mlid && lid && lid !== mlid.id)) throw new VerifyError('machine', 'the process is on another machine');
  const date = Date.parse(p.date);
  if (Number.isNaN(date) || date - now > skew || STARTED - date > skew ||
      (opts.maxAgeMs > 0 && now - date > opts.maxAgeMs + skew) || (expiry !== null && date > expiry)) {
    throw new VerifyError('date', `signed ${p.date}`);
  }
  return { offline: false, machine: mf.data.id, process: d.id };
}

// Agent is one long-lived connection: the lease lives as long as it does.
class Agent {
  constructor(sock) {
    this.sock = sock;
    this.nextId = 1;
    this.pending = new Map();
    this.onNotification = () => {};
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim()) this.dispatch(JSON.parse(line));
      }
    });
    sock.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('the agent closed the connection'));
      this.pending.clear();
    });
  }

  static connect(path) {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      sock.once('connect', () => resolve(new Agent(sock)));
      sock.once('error', reject);
    });
  }

  dispatch(msg) {
    if (msg.id === undefined || msg.id === null) {
      if (msg.method) this.onNotification(msg.method, msg.params || {});
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.error) p.reject(new AgentError(msg.error));
    else p.resolve(msg.result);
  }

  call(method, params) {
    const id = this.nextId++;
    const req = { jsonrpc: '2.0', id, method };
    if (params !== undefined) req.params = params;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.sock.write(JSON.stringify(req) + '\n');
    });
  }

  close() { this.sock.end(); }
}

async function main() {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string', default: defaultPath() },
      app: { type: 'string', default: 'example-node' },
      'app-version': { type: 'string', default: '1.0.0' },
      'wait-ms': { type: 'string', default: '0' },
      entitlement: { type: 'string', multiple: true, default: [] },
      'public-key': { type: 'string', default: process.env.KEYGEN_PUBLIC_KEY || '' },
      fingerprint: { type: 'string', multiple: true, default: [] },
      component: { type: 'string', multiple: true, default: [] },
      'max-age': { type: 'string', default: '0' },
      'require-online': { type: 'boolean', default: false },
      use: { type: 'string', default: '0' },
    },
  });
  const verify = values['public-key'] !== '';
  let agent;
  try {
    agent = await Agent.connect(values.socket);
  } catch (e) {
    console.error(`cannot reach the agent at ${values.socket}: ${e.message}`);
    return 4;
  }
  let lease;
  try {
    const hello = await agent.call('agent.hello', { protocol: PROTOCOL, client: values.app });
    if (hello.protocol !== PROTOCOL) console.error(`warning: agent speaks protocol ${hello.protocol}`);
    lease = await agent.call('lease.acquire', {
      app: values.app, app_version: values['app-version'], wait_ms: Number(values['wait-ms']), confirm: verify,
      entitlements: values.entitlement,
    });
  } catch (e) {
    agent.close();
    if (e.code === 'PROCESS_LIMIT_EXCEEDED') {
      console.error(`no free seat: ${e.data.count} of ${e.data.limit} in use`);
      return 5;
    }
    if (e.code === 'ENTITLEMENTS_MISSING') {
      console.error(`the license lacks: ${(e.data.missing || []).join(', ')}`);
      return 5;
    }
    console.error(`refused: ${e.message}`);
    return ['LICENSE_INVALID', 'NOT_ACTIVATED', 'OFFLINE_EXPIRED'].includes(e.code) ? 5 : 1;
  }
  if (verify) {
    try {
      const r = verifyLease(lease, {
        key: publicKey(values['public-key']), fingerprints: values.fingerprint, components: values.component,
        maxAgeMs: Number(values['max-age']) * 1000, requireOnline: values['require-online'],
      });
      console.log(r.offline ? 'verified offline: machine file only' : `verified ${r.process}`);
    } catch (e) {
      console.error(`lease refused: ${e.message}`);
      try { await agent.call('lease.release', { lease_id: lease.lease_id }); } catch (_) { /* gone */ }
      agent.close();
      return 6;
    }
  }
  try {
    // A policy that requires check-ins: when the next one is due.
    const st = await agent.call('license.status', {});
    if (st.next_check_in) console.log(`next check-in: ${st.next_check_in}`);
  } catch (_) { /* an older agent: no status details */ }
  console.log(`acquired ${lease.lease_id}`);
  console.log(`entitlements: ${(lease.entitlements || []).join(', ')}`);
  if (Number(values.use) > 0) {
    // Metered uses (license.use): Keygen counts them against maxUses.
    try {
      const u = await agent.call('license.use', { count: Number(values.use) });
      console.log(`uses: ${u.uses} of ${u.max_uses === undefined ? 'unlimited' : u.max_uses}${u.offline ? ` (offline, ${u.queued} queued)` : ''}`);
    } catch (e) {
      if (e.code === 'USES_EXCEEDED') {
        console.error(`no uses left: ${e.data.uses} of ${e.data.limit} used`);
        try { await agent.call('lease.release', { lease_id: lease.lease_id }); } catch (_) { /* gone */ }
        agent.close();
        return 5;
      }
      throw e;
    }
  }
  return new Promise((resolve) => {
    agent.onNotification = (method, params) => {
      if (method === 'lease.revoked' && params.lease_id === lease.lease_id) {
        console.log(`revoked: ${params.reason} (${params.code})`);
        agent.close();
        resolve(5);
      } else if (method === 'license.changed') {
        console.log(`license changed: valid=${params.valid}`);
      }
    };
    agent.sock.on('close', () => resolve(4));
    const stop = async () => {
      try { await agent.call('lease.release', { lease_id: lease.lease_id }); } catch (_) { /* gone */ }
      console.log('released');
      agent.close();
      resolve(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

main().then((code) => { process.exitCode = code; }, (e) => { console.error(e); process.exitCode = 1; });
