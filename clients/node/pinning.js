// Trust a jetstream server the way jetstreamctl and ssh do: by the SHA-256 fingerprint of its
// (usually self-signed) TLS certificate, pinned on first use or given by its administrator.
//
// 1. Fetch the certificate with a plain TLS handshake (no verification: that is our job).
// 2. Compare its SHA-256 with the expected fingerprint, if one is known.
// 3. Give gRPC that exact certificate as the only trusted root, verify the name it carries
//    ("jetstream", the DNS name of every self-signed jetstream certificate) instead of the
//    dialled address, and check the fingerprint again on every connection gRPC makes.
'use strict';

const crypto = require('node:crypto');
const net = require('node:net');
const tls = require('node:tls');
const grpc = require('@grpc/grpc-js');

const SELF_SIGNED_NAME = 'jetstream';

function splitAddress(address) {
  const match = /^\[([^\]]+)\](?::(\d+))?$/.exec(address) || /^([^:]+)(?::(\d+))?$/.exec(address);
  if (!match) throw new Error(`${address} is not HOST[:PORT]`);
  return { host: match[1], port: Number(match[2] || 8886) };
}

function formatFingerprint(raw) {
  return `SHA256:${Buffer.from(raw).toString('hex')}`;
}

function parseFingerprint(text) {
  const hex = text.replace(/^SHA256:/i, '').replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`${text} is not SHA256:<64 hex digits>`);
  return Buffer.from(hex, 'hex');
}

function toPem(der) {
  const lines = der.toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN CERTIFICATE-----\n${lines}\n-----END CERTIFICATE-----\n`;
}

/** The DER certificate the server presents, without verifying it. */
function fetchCertificate(host, port, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const options = { host, port, rejectUnauthorized: false, ALPNProtocols: ['h2'] };
    if (!net.isIP(host)) options.servername = host;
    const socket = tls.connect(options, () => {
      const cert = socket.getPeerCertificate(true);
      socket.end();
      if (!cert || !cert.raw) reject(new Error(`${host}:${port} presented no certificate`));
      else resolve(cert.raw);
    });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('TLS handshake timed out')));
    socket.on('error', (err) => reject(new Error(`cannot reach ${host}:${port}: ${err.message}`)));
  });
}

/**
 * Channel credentials and options for `address`, trusting only the certificate whose
 * fingerprint is `expected` (a Buffer), or the one seen now if `expected` is null.
 */
async function pinnedCredentials(address, expected) {
  const { host, port } = splitAddress(address);
  const der = await fetchCertificate(host, port);
  const fingerprint = crypto.createHash('sha256').update(der).digest();
  if (expected && !fingerprint.equals(expected)) {
    throw new Error(`the TLS certificate of ${address} changed: expected ` +
      `${formatFingerprint(expected)}, got ${formatFingerprint(fingerprint)}; refusing to connect`);
  }
  const credentials = grpc.credentials.createSsl(Buffer.from(toPem(der)), null, null, {
    // Called for every connection gRPC opens: the certificate must still be the pinned one.
    checkServerIdentity: (_name, cert) => {
      const seen = crypto.createHash('sha256').update(cert.raw).digest();
      return seen.equals(fingerprint) ? undefined
        : new Error(`certificate changed: ${formatFingerprint(seen)}`);
    },
  });
  const options = {
    'grpc.ssl_target_name_override': SELF_SIGNED_NAME,
    'grpc.default_authority': SELF_SIGNED_NAME,
  };
  return { target: `${host.includes(':') ? `[${host}]` : host}:${port}`, credentials, options,
    fingerprint };
}

module.exports = { splitAddress, formatFingerprint, parseFingerprint, pinnedCredentials };
