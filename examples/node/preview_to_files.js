#!/usr/bin/env node
// Streams one txt2img job's events from an Atelier daemon and writes its live previews and results to files.
// Only the .proto files of proto/ and @grpc/grpc-js are used: no generated code, nothing Atelier-specific.
//
//   node preview_to_files.js --server 127.0.0.1:50051 --out previews --steps 20 --seed 1234 "a red circle"
//
// ATELIER_TOKEN (or --token) sends a bearer token, as the daemon's --auth-tokens wants.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function parseArgs(argv) {
  const args = {server: process.env.ATELIER_SERVER || "127.0.0.1:50051", out: "previews", steps: 20, seed: -1,
                token: process.env.ATELIER_TOKEN || "", proto: path.join(__dirname, "..", "..", "proto"), prompt: ""};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => argv[++i];
    if (flag === "--server") args.server = value();
    else if (flag === "--out") args.out = value();
    else if (flag === "--steps") args.steps = Number(value());
    else if (flag === "--seed") args.seed = Number(value());
    else if (flag === "--token") args.token = value();
    else if (flag === "--proto") args.proto = value();
    else args.prompt = flag;
  }
  return args;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const definition = protoLoader.loadSync("atelier/v1/generation.proto", {
    includeDirs: [args.proto], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true});
  const atelier = grpc.loadPackageDefinition(definition).atelier.v1;
  const client = new atelier.Generation(args.server, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (args.token) metadata.set("authorization", `Bearer ${args.token}`);
  fs.mkdirSync(args.out, {recursive: true});

  const call = client.Generate({prompt: args.prompt, steps: args.steps, seed: args.seed}, metadata);
  call.on("data", (event) => {
    switch (event.event) {
      case "queued":
        console.log(`queued at ${(event.queued.position || 0) + 1}`);
        break;
      case "started":
        console.log(`started: seeds ${event.started.all_seeds.join(", ")}`);
        break;
      case "progress": {
        const p = event.progress;
        console.log(`step ${p.sampling_step || 0}/${p.sampling_steps}`);
        if (p.preview && p.preview.data && p.preview.data.length > 0) {
          const ext = p.preview.mime_type === "image/png" ? "png" : "jpg";
          const step = String(p.sampling_step || 0).padStart(3, "0");
          fs.writeFileSync(path.join(args.out, `step-${step}.${ext}`), p.preview.data);
        }
        break;
      }
      case "result": {
        const file = path.join(args.out, `result-${event.result.index || 0}.png`);
        fs.writeFileSync(file, event.result.image.data);
        console.log(file);
        console.log(event.result.infotext);
        break;
      }
      default:
        break;
    }
  });
  call.on("error", (error) => {
    console.error(`atelier: ${grpc.status[error.code]}: ${error.details}`);
    process.exitCode = 1;
  });
  call.on("end", () => client.close());
}

main();
