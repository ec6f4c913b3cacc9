// The frames sd-webui-animatediff hands ControlNet for video-to-video (animatediff_utils.py
// extract_frames_from_video / the unit's batch folder), read in process without an `ffmpeg` process:
//  - a video (MP4, WebM, GIF, anything FFmpeg's libraries demux and decode) through the extension's filter
//    mpdecimate=hi=64*200:lo=64*50:frac=0.33, which drops frames that barely differ from the last one kept;
//  - a folder of images (PNG, JPEG, WebP), in file-name order, as shared.listfiles lists them.
// Frames are uint8 [H, W, 3] RGB tensors on the CPU.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::animatediff {

// At most `max_frames` frames of the video in `bytes`. INVALID_ARGUMENT for bytes FFmpeg cannot read as a video,
// RESOURCE_EXHAUSTED for frames above 4096 x 4096.
absl::StatusOr<std::vector<at::Tensor>> DecodeVideoFrames(const std::string& bytes, int max_frames);

// The image files of `folder` (not starting with '.'), sorted by name, at most `max_frames`, decoded by `decode`
// (bytes -> uint8 [H, W, 3|4]; alpha is dropped). NOT_FOUND for a missing folder, INVALID_ARGUMENT when it holds no
// image.
absl::StatusOr<std::vector<at::Tensor>> ReadFrameFolder(
    const std::string& folder, int max_frames,
    const std::function<absl::StatusOr<at::Tensor>(const std::string& bytes, const std::string& name)>& decode);

// Whether `path` lies inside one of `roots` (after resolving "..", links and the like). The daemon reads inputs named
// by a request only there (ATELIER_ANIMATEDIFF_INPUT_DIRS).
bool PathInside(const std::string& path, const std::vector<std::string>& roots);

}  // namespace atelier::animatediff
