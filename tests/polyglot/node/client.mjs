// Drives the Strata gateway from Node.js with nothing but the .proto files in protos/:
// no generated code and nothing from Python. Usage: node client.mjs HOST:PORT
//
// Prints one JSON line ({"ok": true|false, ...}) and exits 1 on any mismatch, 2 on bad usage.

import { randomBytes } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTOS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../protos");
const DEADLINE_MS = 120_000;
const STATUS_DETAILS_KEY = "grpc-status-details-bin";

class Mismatch extends Error {}

function check(condition, what, actual) {
  if (!condition) throw new Mismatch(`${what}; got ${JSON.stringify(actual)}`);
}

function loadGateway(address) {
  const definition = protoLoader.loadSync("strata/gateway/v1/gateway.proto", {
    includeDirs: [PROTOS], // google/api/*.proto is vendored there; google/protobuf/* ships with proto-loader
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const { GatewayService } = grpc.loadPackageDefinition(definition).strata.gateway.v1;
  return new GatewayService(address, grpc.credentials.createInsecure());
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + DEADLINE_MS }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

async function expectError(client, method, request) {
  try {
    const reply = await call(client, method, request);
    throw new Mismatch(`${method} should have failed; got ${JSON.stringify(reply)}`);
  } catch (error) {
    if (error instanceof Mismatch) throw error;
    return error;
  }
}

// --- a minimal protobuf wire reader, enough for google.rpc.Status and google.rpc.ErrorInfo ---

function* wireFields(buffer) {
  let offset = 0;
  const varint = () => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = buffer[offset++];
      value |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return value;
    }
  };
  while (offset < buffer.length) {
    const key = Number(varint());
    const [field, wireType] = [key >> 3, key & 7];
    if (wireType === 0) yield [field, varint()];
    else if (wireType === 2) {
      const length = Number(varint());
      yield [field, buffer.subarray(offset, offset + length)];
      offset += length;
    } else throw new Error(`unexpected wire type ${wireType}`);
  }
}

// grpc-status-details-bin → {code, message, details: [{type, reason, domain, metadata}]}
function decodeStatusDetails(bytes) {
  const status = { code: 0, message: "", details: [] };
  for (const [field, value] of wireFields(bytes)) {
    if (field === 1) status.code = Number(value);
    else if (field === 2) status.message = value.toString("utf8");
    else if (field === 3) {
      const any = { type: "", value: Buffer.alloc(0) };
      for (const [f, v] of wireFields(value)) {
        if (f === 1) any.type = v.toString("utf8");
        else if (f === 2) any.value = v;
      }
      const detail = { type: any.type };
      if (any.type.endsWith("/google.rpc.ErrorInfo")) {
        detail.metadata = {};
        for (const [f, v] of wireFields(any.value)) {
          if (f === 1) detail.reason = v.toString("utf8");
          else if (f === 2) detail.domain = v.toString("utf8");
          else if (f === 3) {
            const entry = Object.fromEntries([...wireFields(v)].map(([k, s]) => [k, s.toString("utf8")]));
            detail.metadata[entry[1] ?? ""] = entry[2] ?? "";
          }
        }
      }
      status.details.push(detail);
    }
  }
  return status;
}

function describeError(error) {
  const raw = error.metadata?.get(STATUS_DETAILS_KEY) ?? [];
  return {
    code: error.code,
    status: grpc.status[error.code],
    message: error.details,
    status_details: raw.length ? decodeStatusDetails(Buffer.from(raw[0])) : null,
  };
}

// --- the scenario ---

async function run(client) {
  const suffix = randomBytes(4).toString("hex");
  const name = `node-${suffix}`;
  const results = { collection: name };

  const created = (await call(client, "CreateCollection", { name, description: "made from Node.js" })).collection;
  check(created.name === name, "CreateCollection returns the collection", created);
  check(created.description === "made from Node.js", "CreateCollection keeps the description", created);
  check(created.dimensions > 0, "CreateCollection reports the model's dimensions", created);
  check(Number(created.create_time?.seconds) > 0, "CreateCollection sets create_time", created.create_time);
  results.create_collection = { name: created.name, dimensions: created.dimensions, model: created.embedding_model };

  const documents = {
    bees: "Honey bees communicate the location of flowers to their hive mates by dancing.",
    volcano: "Basaltic lava flows from shield volcanoes such as Mauna Loa on Hawaii.",
  };
  results.put_document = {};
  for (const [id, text] of Object.entries(documents)) {
    const put = await call(client, "PutDocument", {
      collection: name,
      document_id: id,
      text,
      metadata: { fields: { source: { stringValue: "node" }, rank: { numberValue: id.length } } },
    });
    check(put.document?.id === id, `PutDocument ${id} returns the document`, put);
    check(put.document.status === "DOCUMENT_STATUS_READY", `PutDocument ${id} is READY`, put.document.status);
    check(put.changed === true, `PutDocument ${id} reports a change`, put.changed);
    check(put.document.chunk_count >= 1, `PutDocument ${id} indexes chunks`, put.document.chunk_count);
    results.put_document[id] = { status: put.document.status, chunks: put.document.chunk_count };
  }

  const search = await call(client, "Search", { collection: name, query: "how do bees tell where flowers are?", top_k: 2 });
  const top = search.results[0];
  check(search.results.length >= 1, "Search returns results", search);
  check(top.document_id === "bees", "Search ranks the bees document first", search.results.map((r) => r.document_id));
  check(top.text.includes("dancing"), "Search returns the chunk's text", top.text);
  check(top.metadata?.fields?.source?.stringValue === "node", "Search returns the document's metadata", top.metadata);
  check(
    search.results.every((r, i) => i === 0 || r.score <= search.results[i - 1].score),
    "Search orders results by score",
    search.results.map((r) => r.score),
  );
  results.search = search.results.map((r) => ({ document_id: r.document_id, score: r.score }));

  const got = (await call(client, "GetDocument", { collection: name, document: "bees" })).document;
  check(got.id === "bees" && got.collection === name, "GetDocument returns the document", got);
  check(got.status === "DOCUMENT_STATUS_READY", "GetDocument reports READY", got.status);
  check(got.content_type === "text/plain", "GetDocument reports text/plain", got.content_type);
  check(Number(got.size_bytes) === Buffer.byteLength(documents.bees), "GetDocument reports the size", got.size_bytes);
  check(got.metadata?.fields?.rank?.numberValue === 4, "GetDocument keeps the metadata", got.metadata);
  results.get_document = { id: got.id, status: got.status, size_bytes: got.size_bytes, etag: got.etag };

  const listed = await call(client, "ListDocuments", { collection: name });
  const ids = listed.documents.map((d) => d.id);
  check(JSON.stringify(ids) === JSON.stringify(["bees", "volcano"]), "ListDocuments lists both by id", ids);
  results.list_documents = ids;

  await call(client, "DeleteDocument", { collection: name, document: "bees" });
  const afterDelete = (await call(client, "ListDocuments", { collection: name })).documents.map((d) => d.id);
  check(JSON.stringify(afterDelete) === JSON.stringify(["volcano"]), "DeleteDocument removes it", afterDelete);
  const searchAfter = await call(client, "Search", { collection: name, query: "bees dancing", top_k: 5 });
  check(!searchAfter.results.some((r) => r.document_id === "bees"), "a deleted document is not found", searchAfter);
  results.delete_document = { remaining: afterDelete };

  await call(client, "DeleteCollection", { name });
  const gone = await expectError(client, "GetCollection", { name });
  check(gone.code === grpc.status.NOT_FOUND, "DeleteCollection removes the collection", describeError(gone));
  results.delete_collection = { get_after_delete: grpc.status[gone.code] };

  const missingName = `missing-${suffix}`;
  const missing = describeError(await expectError(client, "GetCollection", { name: missingName }));
  check(missing.code === 5, "GetCollection of a missing name is NOT_FOUND (5)", missing);
  check(missing.message.includes(missingName), "the NOT_FOUND message names the collection", missing.message);
  results.error = { name: missingName, ...missing };

  return results;
}

async function main() {
  const address = process.argv[2];
  if (!address) {
    console.error("usage: node client.mjs HOST:PORT");
    return 2;
  }
  const client = loadGateway(address);
  try {
    const results = await run(client);
    console.log(JSON.stringify({ ok: true, ...results }));
    return 0;
  } catch (error) {
    const failure = error instanceof Mismatch ? error.message : error.code !== undefined ? describeError(error) : String(error);
    console.log(JSON.stringify({ ok: false, failure }));
    return 1;
  } finally {
    client.close();
  }
}

process.exitCode = await main();
