// Hard limits the daemon enforces, in one place so validators, the API (Daemon.GetInfo) and tests agree.
#pragma once

#include <cstdint>

namespace atelier {

// Largest width or height of a generated image, in pixels (SD1.x works in multiples of 8).
inline constexpr int kMaxImageSide = 4096;
// Largest batch_size * n_iter of one job.
inline constexpr int kMaxImagesPerJob = 256;
// Largest side of an Upscale (Extras) result.
inline constexpr int kMaxUpscaleSide = 8192;
// Largest sampling step count.
inline constexpr int kMaxSteps = 1000;
// Largest prompt or negative prompt, in bytes.
inline constexpr int kMaxPromptBytes = 256 * 1024;
// Most AND parts of one prompt (each is a conditioning of its own, computed for every step schedule).
inline constexpr int kMaxAndParts = 32;
// Most text conditionings of one prompt: its AND parts times their prompt-editing schedule entries (each one is a
// text-encoder run held for the whole job).
inline constexpr int kMaxConditionings = 256;
// Largest emphasis weight magnitude ((text:w), or 1.1 per nested bracket): beyond it float16/32 overflow.
inline constexpr double kMaxEmphasisWeight = 1000.0;
// Default largest gRPC message (init images, results, artifacts), in bytes; --max-message-mb changes it.
inline constexpr int kDefaultMaxMessageBytes = 64 * 1024 * 1024;
// Default number of queued jobs before Generate answers RESOURCE_EXHAUSTED; --max-queue changes it.
inline constexpr int kDefaultMaxQueue = 64;
// Largest alwayson_scripts / override_settings payload, in bytes of JSON.
inline constexpr int kMaxScriptArgsBytes = 16 * 1024 * 1024;
// Longest job id (force_task_id).
inline constexpr int kMaxJobIdLength = 64;
// Largest safetensors JSON header, in bytes (the reference implementation's limit).
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100u * 1000u * 1000u;

}  // namespace atelier
