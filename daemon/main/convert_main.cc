// atelier-convert: any checkpoint (.ckpt/.pt/.pth/.safetensors) to .safetensors, optionally fp16. Pickles are read
// by the non-executing walker, so a malicious file is refused instead of run. Usually run as `atelier convert`.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/models/checkpoint_convert.h"

// The exit codes of `atelier` (clients/cli/exit_codes.h), which runs this tool and passes its code on.
enum ExitCode : int { kExitOk = 0, kExitUsage = 2, kExitNotFound = 4, kExitInvalid = 5 };

int main(int argc, char** argv) {
  CLI::App app{"atelier convert: write a checkpoint as .safetensors"};
  std::string input, output;
  bool fp16 = false;
  app.add_option("input", input, "checkpoint to read (never executed)")->required()->check(CLI::ExistingFile);
  app.add_option("output", output, "safetensors file to write")->required();
  app.add_flag("--fp16", fp16, "store float32 weights as float16 (half the size)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  auto report = atelier::engine::ConvertToSafetensors(input, output, {fp16});
  if (!report.ok()) {
    std::fprintf(stderr, "atelier: convert: %s\n", std::string(report.status().message()).c_str());
    return report.status().code() == absl::StatusCode::kNotFound ? kExitNotFound
                                                                  : kExitInvalid;
  }
  std::printf("wrote %s: %lld tensors, %.1f MB%s, from a %s (sha256 %s)\n", output.c_str(),
              static_cast<long long>(report->tensors), report->bytes_written / 1e6, fp16 ? " fp16" : "",
              report->source_format.c_str(), report->source_sha256.c_str());
  return kExitOk;
}
