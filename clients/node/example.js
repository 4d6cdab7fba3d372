#!/usr/bin/env node
// A jetstream push from Node.js, using nothing but the .proto files in proto/:
// log in, read the server info, create a destination, build a manifest, start the transfer
// and watch it to completion.
//
//   JETSTREAM_PASSWORD=... JETSTREAM_DEST_PASSWORD=... node example.js \
//       --api 127.0.0.1:8886 --user alice \
//       --dest 10.0.0.2:8886 --dest-user alice \
//       --source /data/reel1 --dest-path /incoming
//
// Options: --fingerprint SHA256:<hex> (the certificate you expect; default: trust the first
// one seen and check it against GetServerInfo), --proto-dir DIR (default ../../proto),
// --timeout SECONDS (default 600).
// Progress goes to stderr; one JSON line with the outcome goes to stdout. Exit 0 only when the
// transfer COMPLETED.
'use strict';

const path = require('node:path');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { formatFingerprint, parseFingerprint, pinnedCredentials, splitAddress } =
  require('./pinning');

const TERMINAL = new Set(['TRANSFER_STATE_COMPLETED', 'TRANSFER_STATE_FAILED',
  'TRANSFER_STATE_CANCELLED']);

function loadApi(protoDir) {
  const dir = path.join(protoDir, 'jetstream', 'v1');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.proto'))
    .map((f) => `jetstream/v1/${f}`);
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protoDir],
    keepCase: true, // field names as in the .proto files (snake_case)
    longs: String, // uint64 sizes and rates may exceed 2^53
    enums: String, // enum values by name
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).jetstream.v1;
}

/** A unary call as a promise, with credentials and a deadline. */
function unary(client, method, request, metadata, seconds = 30) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + seconds * 1000);
    client[method](request, metadata, { deadline }, (err, reply) => {
      if (err) reject(new Error(`${method}: ${grpc.status[err.code]}: ${err.details}`));
      else resolve(reply);
    });
  });
}

/** Follow WatchTransfer until the transfer is terminal; resolves with its last state. */
function watch(client, name, metadata) {
  return new Promise((resolve, reject) => {
    let last = null;
    const call = client.WatchTransfer(
      { name, progress_interval: { seconds: 0, nanos: 500_000_000 } }, metadata);
    call.on('data', (update) => {
      last = update.transfer;
      const p = last.progress;
      process.stderr.write(`${name}: ${last.state} ${p.bytes_done}/${p.bytes_total} bytes, ` +
        `${p.files_done}/${p.files_total} files, ${(Number(p.rate_bps) / 1e6).toFixed(1)} ` +
        `Mbit/s, loss ${(p.loss_ratio * 100).toFixed(1)}%\n`);
      if (TERMINAL.has(last.state)) call.cancel(); // the server ends the stream too
    });
    call.on('error', (err) => {
      if (err.code === grpc.status.CANCELLED && last && TERMINAL.has(last.state)) resolve(last);
      else reject(new Error(`WatchTransfer: ${grpc.status[err.code]}: ${err.details}`));
    });
    call.on('end', () => resolve(last));
  });
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      api: { type: 'string', default: '127.0.0.1:8886' },
      user: { type: 'string' },
      dest: { type: 'string' },
      'dest-user': { type: 'string' },
      source: { type: 'string' },
      'dest-path': { type: 'string', default: '' },
      fingerprint: { type: 'string' },
      'proto-dir': { type: 'string', default: path.join(__dirname, '..', '..', 'proto') },
      timeout: { type: 'string', default: '600' },
    },
  });
  for (const required of ['user', 'dest', 'source']) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  const password = process.env.JETSTREAM_PASSWORD;
  const destPassword = process.env.JETSTREAM_DEST_PASSWORD || password;
  if (!password) throw new Error('set JETSTREAM_PASSWORD');

  const api = loadApi(args['proto-dir']);
  const expected = args.fingerprint ? parseFingerprint(args.fingerprint) : null;
  const { target, credentials, options, fingerprint } =
    await pinnedCredentials(args.api, expected);
  const clients = {};
  for (const service of ['AuthService', 'ServerService', 'DestinationService',
    'ManifestService', 'TransferService']) {
    clients[service] = new api[service](target, credentials, options);
  }
  const anonymous = new grpc.Metadata();

  // 1. Who is the server? GetServerInfo needs no credentials; its fingerprint must be the one
  //    the TLS connection pinned.
  const info = (await unary(clients.ServerService, 'GetServerInfo', {}, anonymous)).server_info;
  if (!Buffer.from(info.tls_certificate_sha256).equals(fingerprint)) {
    throw new Error('GetServerInfo reports another certificate than the one we pinned');
  }
  process.stderr.write(`server ${info.display_name} (jetstream ${info.version}, uid ` +
    `${info.server_uid}), certificate ${formatFingerprint(fingerprint)}\n`);

  // 2. Log in: every later call carries "authorization: Bearer <token>".
  const login = await unary(clients.AuthService, 'Login',
    { username: args.user, password }, anonymous);
  const auth = new grpc.Metadata();
  auth.set('authorization', `Bearer ${login.session_token}`);

  // 3. The destination: the remote server and the credentials to use there. The server
  //    contacts it at once, pins its identity and swaps the password for an API token.
  const dest = splitAddress(args.dest);
  const destination = (await unary(clients.DestinationService, 'CreateDestination', {
    destination: {
      host: dest.host,
      api_port: dest.port,
      password: { username: args['dest-user'] || args.user, password: destPassword },
      labels: { client: 'node-example' },
    },
  }, auth, 60)).destination;
  process.stderr.write(`created ${destination.name} -> ${destination.host}:` +
    `${destination.api_port} as ${destination.username}\n`);

  // 4. The manifest: what to send. WaitManifest returns once it is COMPLETE or ERROR.
  const made = (await unary(clients.ManifestService, 'CreateManifest', {
    manifest: { spec: { mappings: [{ source_path: args.source }] } },
  }, auth)).manifest;
  const manifest = (await unary(clients.ManifestService, 'WaitManifest', { name: made.name },
    auth, 300)).manifest;
  if (manifest.state !== 'MANIFEST_STATE_COMPLETE') {
    throw new Error(`${manifest.name}: ${manifest.state}: ${manifest.error && manifest.error.message}`);
  }

  // 5. The transfer, watched to its end.
  const created = (await unary(clients.TransferService, 'CreateTransfer', {
    transfer: { destination: destination.name, manifest: manifest.name,
      destination_path: args['dest-path'] },
  }, auth)).transfer;
  const timer = setTimeout(() => {
    process.stderr.write(`node example: error: no end after ${args.timeout} s\n`);
    process.exit(1);
  }, Number(args.timeout) * 1000);
  const final = await watch(clients.TransferService, created.name, auth);
  clearTimeout(timer);

  await unary(clients.AuthService, 'Logout', {}, auth);
  for (const client of Object.values(clients)) client.close();
  const outcome = {
    transfer: final.name, state: final.state, bytes_done: final.progress.bytes_done,
    files_done: final.progress.files_done, destination: destination.name,
    server_uid: info.server_uid, fingerprint: formatFingerprint(fingerprint),
    error: final.error ? final.error.message : '',
  };
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
  return final.state === 'TRANSFER_STATE_COMPLETED' ? 0 : 1;
}

main().then((code) => process.exit(code), (err) => {
  process.stderr.write(`node example: error: ${err.message}\n`);
  process.exit(1);
});
