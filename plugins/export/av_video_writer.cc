#include "av_video_writer.h"

#include <algorithm>
#include <cstring>
#include <vector>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include "absl/strings/str_cat.h"

namespace atelier::exporter {
namespace {

std::string AvError(int code) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, text, sizeof(text));
  return text;
}

absl::Status Check(int code, const std::string& what) {
  if (code >= 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", AvError(code)));
}

// A growable in-memory file for libavformat (write and seek: MP4 rewrites its header at the end).
struct MemoryFile {
  std::string data;
  int64_t pos = 0;
  static int Write(void* opaque, uint8_t* buf, int size) {  // FFmpeg 5.1: non-const buf
    auto* f = static_cast<MemoryFile*>(opaque);
    if (f->pos + size > static_cast<int64_t>(f->data.size())) f->data.resize(static_cast<size_t>(f->pos + size));
    std::memcpy(&f->data[static_cast<size_t>(f->pos)], buf, static_cast<size_t>(size));
    f->pos += size;
    return size;
  }
  static int64_t Seek(void* opaque, int64_t offset, int whence) {
    auto* f = static_cast<MemoryFile*>(opaque);
    if (whence == AVSEEK_SIZE) return static_cast<int64_t>(f->data.size());
    whence &= ~AVSEEK_FORCE;
    int64_t target = whence == SEEK_SET ? offset : whence == SEEK_CUR ? f->pos + offset
                                                                      : static_cast<int64_t>(f->data.size()) + offset;
    if (target < 0) return -1;
    f->pos = target;
    return target;
  }
};

}  // namespace

struct AvVideoWriter::Impl {
  VideoOptions options;
  MemoryFile file;
  AVFormatContext* format = nullptr;
  AVIOContext* io = nullptr;
  AVCodecContext* codec = nullptr;
  AVStream* stream = nullptr;
  SwsContext* sws = nullptr;
  AVFrame* frame = nullptr;   // the encoder's input (yuv420p), or the filter's input (rgb24) for GIF
  AVPacket* packet = nullptr;
  AVFilterGraph* graph = nullptr;
  AVFilterContext* source = nullptr;
  AVFilterContext* sink = nullptr;
  int64_t next_pts = 0;
  int enc_width = 0, enc_height = 0;

  ~Impl() {
    avfilter_graph_free(&graph);
    av_frame_free(&frame);
    av_packet_free(&packet);
    sws_freeContext(sws);
    avcodec_free_context(&codec);
    if (format != nullptr) avformat_free_context(format);
    if (io != nullptr) {
      av_freep(&io->buffer);
      avio_context_free(&io);
    }
  }

  absl::Status Drain() {
    while (true) {
      int r = avcodec_receive_packet(codec, packet);
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return absl::OkStatus();
      if (auto s = Check(r, "encoding"); !s.ok()) return s;
      av_packet_rescale_ts(packet, codec->time_base, stream->time_base);
      packet->stream_index = stream->index;
      r = av_interleaved_write_frame(format, packet);
      if (auto s = Check(r, "muxing"); !s.ok()) return s;
    }
  }

  absl::Status Encode(AVFrame* f) {
    if (auto s = Check(avcodec_send_frame(codec, f), "encoding"); !s.ok()) return s;
    return Drain();
  }

  // Pulls what the GIF palette filter has ready (everything at the end) into the encoder.
  absl::Status PullFiltered() {
    AVFrame* out = av_frame_alloc();
    while (true) {
      int r = av_buffersink_get_frame(sink, out);
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) break;
      if (r < 0) {
        av_frame_free(&out);
        return Check(r, "the GIF palette filter");
      }
      absl::Status s = Encode(out);
      av_frame_unref(out);
      if (!s.ok()) {
        av_frame_free(&out);
        return s;
      }
    }
    av_frame_free(&out);
    return absl::OkStatus();
  }
};

AvVideoWriter::AvVideoWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AvVideoWriter::~AvVideoWriter() = default;

absl::StatusOr<std::unique_ptr<AvVideoWriter>> AvVideoWriter::Open(const VideoOptions& options) {
  if (options.width <= 0 || options.height <= 0) return absl::InvalidArgumentError("video: empty frame size");
  if (!(options.fps > 0 && options.fps <= 240)) {
    return absl::InvalidArgumentError(absl::StrCat("video: fps ", options.fps, " is outside (0, 240]"));
  }
  av_log_set_level(AV_LOG_ERROR);  // no per-encode statistics in the daemon's log
  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.options = options;
  const bool gif = options.format == "gif";
  const char* codec_name = options.format == "mp4" ? "libx264" : options.format == "webm" ? "libvpx-vp9" : "gif";
  if (options.format != "mp4" && options.format != "webm" && !gif) {
    return absl::InvalidArgumentError(absl::StrCat("video: unknown format '", options.format, "' (mp4, webm, gif)"));
  }
  if (auto s = Check(avformat_alloc_output_context2(&m.format, nullptr, options.format.c_str(), nullptr), "muxer");
      !s.ok()) {
    return s;
  }
  const AVCodec* codec = avcodec_find_encoder_by_name(codec_name);
  if (codec == nullptr) {
    return absl::UnimplementedError(absl::StrCat("this FFmpeg has no ", codec_name, " encoder"));
  }
  m.stream = avformat_new_stream(m.format, nullptr);
  m.codec = avcodec_alloc_context3(codec);
  m.packet = av_packet_alloc();
  m.frame = av_frame_alloc();
  if (m.stream == nullptr || m.codec == nullptr || m.packet == nullptr || m.frame == nullptr) {
    return absl::ResourceExhaustedError("video: out of memory");
  }
  // yuv420p needs even sizes: odd ones are padded by one pixel (edge replicated by swscale's scaling to it).
  m.enc_width = gif ? options.width : (options.width + 1) / 2 * 2;
  m.enc_height = gif ? options.height : (options.height + 1) / 2 * 2;
  m.codec->width = m.enc_width;
  m.codec->height = m.enc_height;
  // Frame durations: 1/fps (GIF: centiseconds, as the container stores them).
  const AVRational rate = av_d2q(options.fps, 100000);
  m.codec->time_base = gif ? AVRational{1, 100} : av_inv_q(rate);
  m.codec->framerate = rate;
  m.codec->pix_fmt = gif ? AV_PIX_FMT_PAL8 : AV_PIX_FMT_YUV420P;
  if (m.format->oformat->flags & AVFMT_GLOBALHEADER) m.codec->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  AVDictionary* codec_options = nullptr;
  if (options.format == "mp4") {
    av_dict_set_int(&codec_options, "crf", options.crf, 0);
  } else if (options.format == "webm") {
    av_dict_set_int(&codec_options, "crf", options.crf, 0);
    av_dict_set(&codec_options, "b", "0", 0);  // constant quality
    av_dict_set(&codec_options, "row-mt", "1", 0);
  }
  int r = avcodec_open2(m.codec, codec, &codec_options);
  av_dict_free(&codec_options);
  if (auto s = Check(r, absl::StrCat("opening the ", codec_name, " encoder")); !s.ok()) return s;
  if (auto s = Check(avcodec_parameters_from_context(m.stream->codecpar, m.codec), "stream parameters"); !s.ok()) {
    return s;
  }
  m.stream->time_base = m.codec->time_base;
  m.stream->avg_frame_rate = rate;
  if (!options.comment.empty()) {
    av_dict_set(&m.format->metadata, "comment", options.comment.c_str(), 0);
    if (options.format == "webm") av_dict_set(&m.format->metadata, "title", options.comment.c_str(), 0);
  }
  constexpr int kIoBuffer = 1 << 16;
  auto* buffer = static_cast<unsigned char*>(av_malloc(kIoBuffer));
  m.io = avio_alloc_context(buffer, kIoBuffer, 1, &m.file, nullptr, &MemoryFile::Write, &MemoryFile::Seek);
  if (m.io == nullptr) return absl::ResourceExhaustedError("video: out of memory");
  m.format->pb = m.io;
  m.format->flags |= AVFMT_FLAG_CUSTOM_IO;
  AVDictionary* mux_options = nullptr;
  if (gif) av_dict_set_int(&mux_options, "loop", options.loop, 0);
  r = avformat_write_header(m.format, &mux_options);
  av_dict_free(&mux_options);
  if (auto s = Check(r, "writing the header"); !s.ok()) return s;

  if (gif) {
    // rgb24 -> split -> palettegen (over all frames) -> paletteuse (the user's dither) -> pal8.
    m.graph = avfilter_graph_alloc();
    const std::string args = absl::StrCat("video_size=", options.width, "x", options.height,
                                          ":pix_fmt=", static_cast<int>(AV_PIX_FMT_RGB24), ":time_base=1/100");
    if (auto s = Check(avfilter_graph_create_filter(&m.source, avfilter_get_by_name("buffer"), "in", args.c_str(),
                                                    nullptr, m.graph),
                       "the GIF filter source");
        !s.ok()) {
      return s;
    }
    if (auto s = Check(avfilter_graph_create_filter(&m.sink, avfilter_get_by_name("buffersink"), "out", nullptr,
                                                    nullptr, m.graph),
                       "the GIF filter sink");
        !s.ok()) {
      return s;
    }
    AVFilterInOut* outputs = avfilter_inout_alloc();
    AVFilterInOut* inputs = avfilter_inout_alloc();
    outputs->name = av_strdup("in");
    outputs->filter_ctx = m.source;
    inputs->name = av_strdup("out");
    inputs->filter_ctx = m.sink;
    const std::string chain = absl::StrCat("split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=",
                                          options.dither);
    r = avfilter_graph_parse_ptr(m.graph, chain.c_str(), &inputs, &outputs, nullptr);
    avfilter_inout_free(&inputs);
    avfilter_inout_free(&outputs);
    if (r < 0) {
      return absl::InvalidArgumentError(absl::StrCat("GIF dither '", options.dither, "' is not one paletteuse knows (",
                                                     AvError(r), "): bayer, heckbert, floyd_steinberg, sierra2, "
                                                     "sierra2_4a, none"));
    }
    if (auto s = Check(avfilter_graph_config(m.graph, nullptr), "the GIF filter graph"); !s.ok()) return s;
    m.frame->format = AV_PIX_FMT_RGB24;
    m.frame->width = options.width;
    m.frame->height = options.height;
  } else {
    m.frame->format = AV_PIX_FMT_YUV420P;
    m.frame->width = m.enc_width;
    m.frame->height = m.enc_height;
    m.sws = sws_getContext(options.width, options.height, AV_PIX_FMT_RGB24, m.enc_width, m.enc_height,
                           AV_PIX_FMT_YUV420P, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr, nullptr,
                           nullptr);
    if (m.sws == nullptr) return absl::InternalError("video: no RGB -> YUV converter");
  }
  if (auto s = Check(av_frame_get_buffer(m.frame, 0), "frame buffer"); !s.ok()) return s;
  return std::unique_ptr<AvVideoWriter>(new AvVideoWriter(std::move(impl)));
}

absl::Status AvVideoWriter::AddFrame(const std::uint8_t* rgb, int width, int height) {
  Impl& m = *impl_;
  if (width != m.options.width || height != m.options.height) {
    return absl::InvalidArgumentError(absl::StrCat("frame ", frames_, " is ", width, "x", height, " but the ",
                                                   m.options.format, " is ", m.options.width, "x",
                                                   m.options.height, ": frames of one video must have one size"));
  }
  if (auto s = Check(av_frame_make_writable(m.frame), "frame buffer"); !s.ok()) return s;
  if (m.graph != nullptr) {
    for (int y = 0; y < height; ++y) {
      std::memcpy(m.frame->data[0] + y * m.frame->linesize[0], rgb + static_cast<size_t>(y) * width * 3,
                  static_cast<size_t>(width) * 3);
    }
    // pts in centiseconds: frame i starts at round(i * 100 / fps).
    m.frame->pts = static_cast<int64_t>(std::llround(frames_ * 100.0 / m.options.fps));
    if (auto s = Check(av_buffersrc_add_frame_flags(m.source, m.frame, AV_BUFFERSRC_FLAG_KEEP_REF), "GIF filter");
        !s.ok()) {
      return s;
    }
    ++frames_;
    return m.PullFiltered();
  }
  const uint8_t* src[1] = {rgb};
  const int stride[1] = {width * 3};
  sws_scale(m.sws, src, stride, 0, height, m.frame->data, m.frame->linesize);
  m.frame->pts = m.next_pts++;
  ++frames_;
  return m.Encode(m.frame);
}

absl::StatusOr<std::string> AvVideoWriter::Finish() {
  Impl& m = *impl_;
  if (frames_ == 0) return absl::InvalidArgumentError("no frames to encode");
  if (m.graph != nullptr) {
    if (auto s = Check(av_buffersrc_add_frame_flags(m.source, nullptr, 0), "GIF filter"); !s.ok()) return s;
    if (auto s = m.PullFiltered(); !s.ok()) return s;
  }
  if (auto s = m.Encode(nullptr); !s.ok()) return s;
  if (auto s = Check(av_write_trailer(m.format), "writing the trailer"); !s.ok()) return s;
  avio_flush(m.io);
  std::string out = std::move(m.file.data);
  if (m.options.format == "gif" && !m.options.comment.empty()) return AddGifComment(out, m.options.comment);
  return out;
}

absl::StatusOr<std::string> AddGifComment(const std::string& gif, const std::string& comment) {
  if (gif.size() < 13 || gif.compare(0, 3, "GIF") != 0) return absl::InvalidArgumentError("not a GIF");
  const auto flags = static_cast<unsigned char>(gif[10]);
  size_t at = 13;
  if (flags & 0x80) at += 3u * (1u << ((flags & 0x07) + 1));  // global colour table
  if (at > gif.size()) return absl::InvalidArgumentError("truncated GIF");
  std::string ext = "\x21\xFE";
  for (size_t i = 0; i < comment.size(); i += 255) {
    const size_t n = std::min<size_t>(255, comment.size() - i);
    ext.push_back(static_cast<char>(n));
    ext.append(comment, i, n);
  }
  ext.push_back('\0');
  return gif.substr(0, at) + ext + gif.substr(at);
}

}  // namespace atelier::exporter
