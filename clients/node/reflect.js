#!/usr/bin/env node
// The jetstream API from a client that has no .proto files at all: ask the server's
// reflection service for the descriptors, build the client from them, call it.
//
//   node reflect.js --api 127.0.0.1:8886 [--fingerprint SHA256:<hex>]
//
// Prints one JSON line: the services the server offers and its GetServerInfo answer (which
// needs no login). Any gRPC language with reflection support (grpcurl, Postman, evans...)
// can do the same.
'use strict';

const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const { formatFingerprint, parseFingerprint, pinnedCredentials } = require('./pinning');

// The standard gRPC reflection protocol (grpc/reflection/v1alpha/reflection.proto), reduced
// to the messages used here. It is gRPC's, not jetstream's.
const REFLECTION_PROTO = `
syntax = "proto3";
package grpc.reflection.v1alpha;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
`;

function reflectionClient(target, credentials, options) {
  const root = protobuf.parse(REFLECTION_PROTO, { keepCase: true }).root;
  const definition = protoLoader.fromJSON(root.toJSON(), { keepCase: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(definition).grpc.reflection.v1alpha;
  return new pkg.ServerReflection(target, credentials, options);
}

/** Send the requests on one reflection stream; resolve with the answers in order. */
function ask(client, requests) {
  return new Promise((resolve, reject) => {
    const answers = [];
    const call = client.ServerReflectionInfo();
    call.on('data', (answer) => {
      if (answer.error_response) {
        reject(new Error(`reflection: ${answer.error_response.error_message}`));
        return;
      }
      answers.push(answer);
      if (answers.length === requests.length) call.end();
    });
    call.on('error', (err) => reject(new Error(`reflection: ${err.details || err.message}`)));
    call.on('end', () => resolve(answers));
    for (const request of requests) call.write(request);
  });
}

/** A FileDescriptorSet (field 1, repeated FileDescriptorProto) from serialized files. */
function descriptorSet(files) {
  const writer = protobuf.Writer.create();
  for (const file of files) writer.uint32((1 << 3) | 2).bytes(file);
  return Buffer.from(writer.finish());
}

async function main() {
  const { values: args } = parseArgs({
    options: { api: { type: 'string', default: '127.0.0.1:8886' },
      fingerprint: { type: 'string' } },
  });
  const expected = args.fingerprint ? parseFingerprint(args.fingerprint) : null;
  const { target, credentials, options, fingerprint } =
    await pinnedCredentials(args.api, expected);
  const reflection = reflectionClient(target, credentials, options);

  const [listed] = await ask(reflection, [{ list_services: '' }]);
  const services = listed.list_services_response.service.map((s) => s.name).sort();
  const ours = services.filter((name) => name.startsWith('jetstream.v1.'));
  const answers = await ask(reflection, ours.map((name) => ({ file_containing_symbol: name })));
  const files = new Map(); // file descriptors by content, each once
  for (const answer of answers) {
    for (const file of answer.file_descriptor_response.file_descriptor_proto) {
      files.set(Buffer.from(file).toString('base64'), Buffer.from(file));
    }
  }
  reflection.close();

  const definition = protoLoader.loadFileDescriptorSetFromBuffer(
    descriptorSet([...files.values()]),
    { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const api = grpc.loadPackageDefinition(definition).jetstream.v1;
  const server = new api.ServerService(target, credentials, options);
  const info = await new Promise((resolve, reject) => {
    server.GetServerInfo({}, { deadline: new Date(Date.now() + 10000) },
      (err, reply) => (err ? reject(new Error(err.details)) : resolve(reply.server_info)));
  });
  server.close();
  process.stdout.write(`${JSON.stringify({
    services, descriptor_files: files.size, server_uid: info.server_uid,
    version: info.version, fingerprint: formatFingerprint(fingerprint),
    reported_fingerprint: formatFingerprint(Buffer.from(info.tls_certificate_sha256)),
  })}\n`);
}

main().catch((err) => {
  process.stderr.write(`node reflect: error: ${err.message}\n`);
  process.exit(1);
});
