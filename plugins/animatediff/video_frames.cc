#include "video_frames.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>

#include <ATen/ATen.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
}

namespace atelier::animatediff {
namespace {

namespace fs = std::filesystem;

// The extension's ffmpeg filter (extract_frames_from_video), then RGB.
constexpr const char* kDecimate = "mpdecimate=hi=64*200:lo=64*50:frac=0.33,format=rgb24";
constexpr int kMaxSide = 4096;

std::string AvError(int code) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, text, sizeof(text));
  return text;
}

struct MemoryInput {
  const std::string* bytes;
  size_t pos = 0;
};

int ReadMemory(void* opaque, uint8_t* buf, int size) {
  auto* in = static_cast<MemoryInput*>(opaque);
  const size_t left = in->bytes->size() - in->pos;
  if (left == 0) return AVERROR_EOF;
  const size_t n = std::min(left, static_cast<size_t>(size));
  std::memcpy(buf, in->bytes->data() + in->pos, n);
  in->pos += n;
  return static_cast<int>(n);
}

int64_t SeekMemory(void* opaque, int64_t offset, int whence) {
  auto* in = static_cast<MemoryInput*>(opaque);
  const auto size = static_cast<int64_t>(in->bytes->size());
  if (whence & AVSEEK_SIZE) return size;
  int64_t target = offset;
  switch (whence & ~AVSEEK_FORCE) {
    case SEEK_SET: break;
    case SEEK_CUR: target += static_cast<int64_t>(in->pos); break;
    case SEEK_END: target += size; break;
    default: return -1;
  }
  if (target < 0 || target > size) return -1;
  in->pos = static_cast<size_t>(target);
  return target;
}

struct Demuxer {
  AVFormatContext* format = nullptr;
  AVIOContext* io = nullptr;
  ~Demuxer() {
    avformat_close_input(&format);
    if (io != nullptr) av_freep(&io->buffer);
    avio_context_free(&io);
  }
};
struct CodecDeleter {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct GraphDeleter {
  void operator()(AVFilterGraph* g) const { avfilter_graph_free(&g); }
};
struct FrameDeleter {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketDeleter {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};

at::Tensor RgbOf(const AVFrame* f) {
  at::Tensor out = at::empty({f->height, f->width, 3}, at::kByte);
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (int y = 0; y < f->height; ++y) {
    std::memcpy(dst + static_cast<size_t>(y) * f->width * 3, f->data[0] + static_cast<ptrdiff_t>(y) * f->linesize[0],
                static_cast<size_t>(f->width) * 3);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<at::Tensor>> DecodeVideoFrames(const std::string& bytes, int max_frames) {
  if (bytes.empty()) return absl::InvalidArgumentError("the video is empty");
  MemoryInput input{&bytes};
  Demuxer demux;
  demux.format = avformat_alloc_context();
  auto* buffer = static_cast<uint8_t*>(av_malloc(1 << 16));
  demux.io = avio_alloc_context(buffer, 1 << 16, 0, &input, ReadMemory, nullptr, SeekMemory);
  if (demux.format == nullptr || demux.io == nullptr) return absl::ResourceExhaustedError("out of memory");
  demux.format->pb = demux.io;
  demux.format->flags |= AVFMT_FLAG_CUSTOM_IO;
  if (int r = avformat_open_input(&demux.format, nullptr, nullptr, nullptr); r < 0) {
    return absl::InvalidArgumentError(absl::StrCat("not a video FFmpeg can read (", AvError(r), ")"));
  }
  if (int r = avformat_find_stream_info(demux.format, nullptr); r < 0) {
    return absl::InvalidArgumentError(absl::StrCat("the video's streams cannot be read (", AvError(r), ")"));
  }
  const AVCodec* codec = nullptr;
  const int stream = av_find_best_stream(demux.format, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
  if (stream < 0 || codec == nullptr) return absl::InvalidArgumentError("the file has no video stream FFmpeg decodes");
  AVStream* st = demux.format->streams[stream];
  std::unique_ptr<AVCodecContext, CodecDeleter> dec(avcodec_alloc_context3(codec));
  if (!dec || avcodec_parameters_to_context(dec.get(), st->codecpar) < 0 || avcodec_open2(dec.get(), codec, nullptr) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("the video's codec (", codec->name, ") cannot be opened"));
  }
  if (dec->width < 1 || dec->height < 1 || dec->width > kMaxSide || dec->height > kMaxSide) {
    return absl::ResourceExhaustedError(absl::StrCat("video frames of ", dec->width, "x", dec->height,
                                                     " are outside 1..", kMaxSide, " pixels a side"));
  }

  // buffer -> mpdecimate -> format=rgb24 -> buffersink
  std::unique_ptr<AVFilterGraph, GraphDeleter> graph(avfilter_graph_alloc());
  AVFilterContext *src = nullptr, *sink = nullptr;
  const AVRational rate = av_guess_frame_rate(demux.format, st, nullptr);
  const AVRational tb = st->time_base;
  const std::string src_args = absl::StrCat(
      "video_size=", dec->width, "x", dec->height, ":pix_fmt=", static_cast<int>(dec->pix_fmt), ":time_base=", tb.num,
      "/", tb.den, ":pixel_aspect=", std::max(dec->sample_aspect_ratio.num, 0), "/",
      std::max(dec->sample_aspect_ratio.den, 1), rate.num > 0 ? absl::StrCat(":frame_rate=", rate.num, "/", rate.den) : "");
  if (!graph ||
      avfilter_graph_create_filter(&src, avfilter_get_by_name("buffer"), "in", src_args.c_str(), nullptr, graph.get()) < 0 ||
      avfilter_graph_create_filter(&sink, avfilter_get_by_name("buffersink"), "out", nullptr, nullptr, graph.get()) < 0) {
    return absl::InternalError("FFmpeg's filter graph could not be set up");
  }
  AVFilterInOut* outputs = avfilter_inout_alloc();
  AVFilterInOut* inputs = avfilter_inout_alloc();
  outputs->name = av_strdup("in");
  outputs->filter_ctx = src;
  inputs->name = av_strdup("out");
  inputs->filter_ctx = sink;
  int r = avfilter_graph_parse_ptr(graph.get(), kDecimate, &inputs, &outputs, nullptr);
  avfilter_inout_free(&inputs);
  avfilter_inout_free(&outputs);
  if (r < 0 || (r = avfilter_graph_config(graph.get(), nullptr)) < 0) {
    return absl::InternalError(absl::StrCat("FFmpeg's mpdecimate filter could not be set up (", AvError(r), ")"));
  }

  std::vector<at::Tensor> frames;
  std::unique_ptr<AVFrame, FrameDeleter> frame(av_frame_alloc()), filtered(av_frame_alloc());
  std::unique_ptr<AVPacket, PacketDeleter> packet(av_packet_alloc());
  const auto drain_sink = [&]() -> absl::Status {
    while (static_cast<int>(frames.size()) < max_frames) {
      const int got = av_buffersink_get_frame(sink, filtered.get());
      if (got == AVERROR(EAGAIN) || got == AVERROR_EOF) return absl::OkStatus();
      if (got < 0) return absl::InternalError(absl::StrCat("filtering the video failed (", AvError(got), ")"));
      frames.push_back(RgbOf(filtered.get()));
      av_frame_unref(filtered.get());
    }
    return absl::OkStatus();
  };
  const auto drain_decoder = [&]() -> absl::Status {
    while (true) {
      const int got = avcodec_receive_frame(dec.get(), frame.get());
      if (got == AVERROR(EAGAIN) || got == AVERROR_EOF) return absl::OkStatus();
      if (got < 0) return absl::InvalidArgumentError(absl::StrCat("the video cannot be decoded (", AvError(got), ")"));
      if (frame->width != dec->width || frame->height != dec->height) {
        av_frame_unref(frame.get());
        return absl::InvalidArgumentError("the video changes its frame size midway");
      }
      const int added = av_buffersrc_add_frame_flags(src, frame.get(), 0);
      av_frame_unref(frame.get());
      if (added < 0) return absl::InternalError(absl::StrCat("filtering the video failed (", AvError(added), ")"));
      if (absl::Status s = drain_sink(); !s.ok()) return s;
    }
  };
  while (static_cast<int>(frames.size()) < max_frames && av_read_frame(demux.format, packet.get()) >= 0) {
    if (packet->stream_index == stream) {
      const int sent = avcodec_send_packet(dec.get(), packet.get());
      av_packet_unref(packet.get());
      if (sent < 0 && sent != AVERROR(EAGAIN)) {
        return absl::InvalidArgumentError(absl::StrCat("the video cannot be decoded (", AvError(sent), ")"));
      }
      if (absl::Status s = drain_decoder(); !s.ok()) return s;
    } else {
      av_packet_unref(packet.get());
    }
  }
  if (static_cast<int>(frames.size()) < max_frames) {
    avcodec_send_packet(dec.get(), nullptr);
    if (absl::Status s = drain_decoder(); !s.ok()) return s;
    av_buffersrc_add_frame_flags(src, nullptr, 0);
    if (absl::Status s = drain_sink(); !s.ok()) return s;
  }
  if (frames.empty()) return absl::InvalidArgumentError("the video has no frame");
  return frames;
}

absl::StatusOr<std::vector<at::Tensor>> ReadFrameFolder(
    const std::string& folder, int max_frames,
    const std::function<absl::StatusOr<at::Tensor>(const std::string& bytes, const std::string& name)>& decode) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return absl::NotFoundError(absl::StrCat("no folder '", folder, "'"));
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string ext = absl::AsciiStrToLower(entry.path().extension().string());
    if (name.empty() || name[0] == '.' || !entry.is_regular_file(ec)) continue;
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp") names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  if (names.empty()) return absl::InvalidArgumentError(absl::StrCat("folder '", folder, "' holds no PNG, JPEG or WebP image"));
  if (static_cast<int>(names.size()) > max_frames) names.resize(static_cast<size_t>(max_frames));
  std::vector<at::Tensor> frames;
  for (const auto& name : names) {
    std::ifstream file(fs::path(folder) / name, std::ios::binary);
    std::stringstream data;
    data << file.rdbuf();
    auto image = decode(data.str(), name);
    if (!image.ok()) return image.status();
    frames.push_back(image->slice(2, 0, 3).contiguous());
  }
  return frames;
}

bool PathInside(const std::string& path, const std::vector<std::string>& roots) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) return false;
  for (const auto& root : roots) {
    if (root.empty()) continue;
    const fs::path r = fs::weakly_canonical(fs::absolute(root, ec), ec);
    if (ec) continue;
    auto [ri, pi] = std::mismatch(r.begin(), r.end(), p.begin(), p.end());
    if (ri == r.end()) return true;
  }
  return false;
}

}  // namespace atelier::animatediff
