#!/usr/bin/env node
// Acquire a keygen-agent lease, print the entitlements, hold it until
// interrupted. Core modules only; see docs/protocol.md.
//
// Exit codes: 0 released on Ctrl-C, 4 agent unreachable, 5 no free seat or
// lease revoked, 1 other errors.
'use strict';
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
    },
  });
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
      app: values.app, app_version: values['app-version'], wait_ms: Number(values['wait-ms']),
    });
  } catch (e) {
    agent.close();
    if (e.code === 'PROCESS_LIMIT_EXCEEDED') {
      console.error(`no free seat: ${e.data.count} of ${e.data.limit} in use`);
      return 5;
    }
    console.error(`refused: ${e.message}`);
    return ['LICENSE_INVALID', 'NOT_ACTIVATED', 'OFFLINE_EXPIRED'].includes(e.code) ? 5 : 1;
  }
  console.log(`acquired ${lease.lease_id}`);
  console.log(`entitlements: ${(lease.entitlements || []).join(', ')}`);
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
