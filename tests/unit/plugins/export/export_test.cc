// The export plugin's writers, each output decoded back with FFmpeg's libavformat / libavcodec, libwebp's
// animation decoder or by its bytes: frame count, size, fps and durations, loop count, pixels (lossless exact,
// lossy by PSNR) and the infotext where the extension puts it; the contact sheet by its pixels and layout.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <opencv2/imgproc.hpp>
#include <webp/demux.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}

#include "av_video_writer.h"
#include "contact_sheet.h"
#include "export_options.h"
#include "test_support.h"
#include "webp_anim_writer.h"

namespace atelier {
namespace {

namespace ex = exporter;
using ::testing::HasSubstr;

// Smooth frames (a moving gradient): what lossy codecs are judged on.
std::vector<cv::Mat> SmoothFrames(int n, int w, int h) {
  std::vector<cv::Mat> frames;
  for (int i = 0; i < n; ++i) {
    cv::Mat m(h, w, CV_8UC3);
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        m.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(40 + x * 128 / w + i * 4), static_cast<uint8_t>(30 + y * 180 / h),
                                          static_cast<uint8_t>(128 + 60 * std::sin((x + y + i) * 0.05)));
      }
    }
    frames.push_back(m);
  }
  return frames;
}

// Flat blocks of 16 colours: a GIF palette holds them exactly.
std::vector<cv::Mat> BlockFrames(int n, int w, int h) {
  std::vector<cv::Mat> frames;
  for (int i = 0; i < n; ++i) {
    cv::Mat m(h, w, CV_8UC3);
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        const int k = ((x / 8) + (y / 8) + i) % 16;
        m.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(k * 16), static_cast<uint8_t>(255 - k * 16), static_cast<uint8_t>((k * 37) % 256));
      }
    }
    frames.push_back(m);
  }
  return frames;
}

double Psnr(const cv::Mat& a, const cv::Mat& b) { return cv::PSNR(a, b); }

struct Decoded {
  std::vector<cv::Mat> frames;  // RGB
  std::vector<int64_t> pts_ms;
  int width = 0, height = 0;
  double fps = 0;
  std::map<std::string, std::string> metadata;
};

// Decodes a file with libavformat / libavcodec into RGB frames.
Decoded DecodeAv(const std::string& bytes, const std::string& ext) {
  testing::TempDir dir;
  const std::string path = (dir.path() / ("v." + ext)).string();
  std::ofstream(path, std::ios::binary) << bytes;
  Decoded d;
  AVFormatContext* fmt = nullptr;
  EXPECT_EQ(avformat_open_input(&fmt, path.c_str(), nullptr, nullptr), 0);
  if (fmt == nullptr) return d;
  avformat_find_stream_info(fmt, nullptr);
  const AVDictionaryEntry* e = nullptr;
  while ((e = av_dict_get(fmt->metadata, "", e, AV_DICT_IGNORE_SUFFIX)) != nullptr) d.metadata[e->key] = e->value;
  const int si = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  AVStream* st = fmt->streams[si];
  d.fps = av_q2d(st->avg_frame_rate);
  const AVCodec* codec = avcodec_find_decoder(st->codecpar->codec_id);
  AVCodecContext* ctx = avcodec_alloc_context3(codec);
  avcodec_parameters_to_context(ctx, st->codecpar);
  avcodec_open2(ctx, codec, nullptr);
  d.width = ctx->width;
  d.height = ctx->height;
  AVPacket* pkt = av_packet_alloc();
  AVFrame* frame = av_frame_alloc();
  auto take = [&]() {
    while (avcodec_receive_frame(ctx, frame) == 0) {
      cv::Mat rgb(frame->height, frame->width, CV_8UC3);
      SwsContext* sws = sws_getContext(frame->width, frame->height, static_cast<AVPixelFormat>(frame->format),
                                       frame->width, frame->height, AV_PIX_FMT_RGB24, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr, nullptr, nullptr);
      uint8_t* dst[1] = {rgb.data};
      int stride[1] = {static_cast<int>(rgb.step)};
      sws_scale(sws, frame->data, frame->linesize, 0, frame->height, dst, stride);
      sws_freeContext(sws);
      d.frames.push_back(rgb);
      d.pts_ms.push_back(static_cast<int64_t>(std::llround(frame->best_effort_timestamp * av_q2d(st->time_base) * 1000)));
    }
  };
  while (av_read_frame(fmt, pkt) >= 0) {
    if (pkt->stream_index == si) {
      avcodec_send_packet(ctx, pkt);
      take();
    }
    av_packet_unref(pkt);
  }
  avcodec_send_packet(ctx, nullptr);
  take();
  av_frame_free(&frame);
  av_packet_free(&pkt);
  avcodec_free_context(&ctx);
  avformat_close_input(&fmt);
  return d;
}

std::string Encode(const std::string& format, const std::vector<cv::Mat>& frames, double fps, const std::string& comment,
                   int loop = 0) {
  ex::VideoOptions o;
  o.format = format;
  o.width = frames[0].cols;
  o.height = frames[0].rows;
  o.fps = fps;
  o.loop = loop;
  o.comment = comment;
  auto w = ex::AvVideoWriter::Open(o);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return "";
  for (const auto& f : frames) EXPECT_TRUE((*w)->AddFrame(f.data, f.cols, f.rows).ok());
  auto bytes = (*w)->Finish();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : "";
}

const std::string kInfotext = "a cat, ü\nSteps: 20, Sampler: Euler a, Seed: 1234, Size: 64x48";

TEST(ExportVideoTest, GifHasEveryFrameExactlyItsLoopDurationsAndComment) {
  const auto frames = BlockFrames(6, 64, 48);
  const std::string gif = Encode("gif", frames, 8, kInfotext, 3);
  ASSERT_EQ(gif.compare(0, 6, "GIF89a"), 0);
  // The loop count (NETSCAPE2.0 application extension) and the comment extension, read from the bytes.
  const size_t netscape = gif.find("NETSCAPE2.0");
  ASSERT_NE(netscape, std::string::npos);
  EXPECT_EQ(static_cast<uint8_t>(gif[netscape + 13]) | (static_cast<uint8_t>(gif[netscape + 14]) << 8), 3);
  const size_t comment = gif.find("\x21\xFE");
  ASSERT_NE(comment, std::string::npos);
  std::string text;
  for (size_t at = comment + 2; at < gif.size() && gif[at] != 0; at += 1 + static_cast<uint8_t>(gif[at])) {
    text.append(gif, at + 1, static_cast<uint8_t>(gif[at]));
  }
  EXPECT_EQ(text, kInfotext);
  const Decoded d = DecodeAv(gif, "gif");
  ASSERT_EQ(d.frames.size(), frames.size());
  EXPECT_EQ(d.width, 64);
  EXPECT_EQ(d.height, 48);
  for (size_t i = 0; i < frames.size(); ++i) {
    cv::Mat diff;
    cv::absdiff(d.frames[i], frames[i], diff);
    EXPECT_EQ(cv::countNonZero(diff.reshape(1)), 0) << "frame " << i << " (a 16-colour frame fits the palette exactly)";
    // 1000/fps ms per frame, as centiseconds: frame i at round(i * 12.5) cs.
    EXPECT_EQ(d.pts_ms[i], std::llround(i * 100.0 / 8) * 10) << i;
  }
  // Infinite loop by default.
  const std::string forever = Encode("gif", frames, 8, "");
  const size_t n2 = forever.find("NETSCAPE2.0");
  ASSERT_NE(n2, std::string::npos);
  EXPECT_EQ(static_cast<uint8_t>(forever[n2 + 13]) | (static_cast<uint8_t>(forever[n2 + 14]) << 8), 0);
}

TEST(ExportVideoTest, Mp4AndWebmDecodeWithTheirRateQualityAndComment) {
  const auto frames = SmoothFrames(8, 64, 48);
  for (const char* format : {"mp4", "webm"}) {
    SCOPED_TRACE(format);
    const Decoded d = DecodeAv(Encode(format, frames, 12, kInfotext), format);
    ASSERT_EQ(d.frames.size(), frames.size());
    EXPECT_EQ(d.width, 64);
    EXPECT_EQ(d.height, 48);
    EXPECT_NEAR(d.fps, 12.0, 0.01);
    double worst = 1e9;
    for (size_t i = 0; i < frames.size(); ++i) worst = std::min(worst, Psnr(d.frames[i], frames[i]));
    std::printf("    %s worst PSNR %.1f dB\n", format, worst);
    EXPECT_GE(worst, std::string(format) == "mp4" ? 35.0 : 30.0);
    const std::string key = d.metadata.count("comment") ? "comment" : d.metadata.count("COMMENT") ? "COMMENT" : "";
    ASSERT_FALSE(key.empty()) << "no comment metadata";
    EXPECT_EQ(d.metadata.at(key), kInfotext);
  }
  // Odd sizes are padded to even ones for yuv420p.
  const auto odd = SmoothFrames(3, 63, 47);
  const Decoded d = DecodeAv(Encode("mp4", odd, 8, ""), "mp4");
  ASSERT_EQ(d.frames.size(), 3u);
  EXPECT_EQ(d.width, 64);
  EXPECT_EQ(d.height, 48);
}

TEST(ExportVideoTest, WebpAnimationFramesTimingLoopAndExif) {
  const auto frames = SmoothFrames(5, 64, 48);
  for (bool lossless : {true, false}) {
    SCOPED_TRACE(lossless ? "lossless" : "lossy");
    ex::WebpOptions o;
    o.width = 64;
    o.height = 48;
    o.fps = 8;
    o.loop = 2;
    o.lossless = lossless;
    o.comment = kInfotext;
    auto w = ex::WebpAnimWriter::Open(o);
    ASSERT_TRUE(w.ok());
    for (const auto& f : frames) ASSERT_TRUE((*w)->AddFrame(f.data, f.cols, f.rows).ok());
    auto bytes = (*w)->Finish();
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    WebPData data{reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()};
    WebPAnimDecoderOptions dopt;
    WebPAnimDecoderOptionsInit(&dopt);
    dopt.color_mode = MODE_RGBA;
    WebPAnimDecoder* dec = WebPAnimDecoderNew(&data, &dopt);
    ASSERT_NE(dec, nullptr);
    WebPAnimInfo info;
    WebPAnimDecoderGetInfo(dec, &info);
    // Lossless keeps every frame; lossy libwebp (as Pillow, hence the extension) merges frames it finds close
    // enough into one longer frame, so the frames are judged at their start times.
    if (lossless) EXPECT_EQ(info.frame_count, 5u); else EXPECT_LE(info.frame_count, 5u);
    EXPECT_EQ(info.loop_count, 2u);
    EXPECT_EQ(info.canvas_width, 64u);
    int start = 0, last_end = 0;
    while (WebPAnimDecoderHasMoreFrames(dec)) {
      uint8_t* rgba = nullptr;
      int ts = 0;  // the end time of the frame
      WebPAnimDecoderGetNext(dec, &rgba, &ts);
      const size_t i = static_cast<size_t>(std::lround(start / 125.0));  // 1000/fps ms per frame
      ASSERT_LT(i, frames.size());
      cv::Mat got(48, 64, CV_8UC4, rgba), rgb;
      cv::cvtColor(got, rgb, cv::COLOR_RGBA2RGB);
      if (lossless) {
        EXPECT_EQ(ts - start, 125);
        cv::Mat diff;
        cv::absdiff(rgb, frames[i], diff);
        EXPECT_EQ(cv::countNonZero(diff.reshape(1)), 0);
      } else {
        EXPECT_EQ((ts - start) % 125, 0);
        EXPECT_GE(Psnr(rgb, frames[i]), 30.0);
      }
      start = last_end = ts;
    }
    EXPECT_EQ(last_end, 625);
    WebPAnimDecoderDelete(dec);
    // EXIF UserComment: "UNICODE\0" + UTF-16BE of the infotext.
    WebPDemuxer* demux = WebPDemux(&data);
    WebPChunkIterator chunk;
    ASSERT_TRUE(WebPDemuxGetChunk(demux, "EXIF", 1, &chunk));
    const std::string exif(reinterpret_cast<const char*>(chunk.chunk.bytes), chunk.chunk.size);
    WebPDemuxReleaseChunkIterator(&chunk);
    WebPDemuxDelete(demux);
    EXPECT_EQ(exif, ex::ExifUserComment(kInfotext));
    const size_t u = exif.find(std::string("UNICODE\0", 8));
    ASSERT_NE(u, std::string::npos);
    std::string ascii;
    for (size_t k = u + 8; k + 1 < exif.size(); k += 2) ascii.push_back(exif[k] == 0 ? exif[k + 1] : '?');
    EXPECT_THAT(ascii, HasSubstr("Steps: 20, Sampler: Euler a, Seed: 1234"));
  }
}

TEST(ContactSheetTest, CellsAreTheFramesResizedAndLabelsSitBelowThem) {
  ex::SheetOptions o;
  o.cell = 32;
  o.spacing = 4;
  o.columns = 3;
  o.label = "both";
  o.header = "a cat Steps: 20";
  auto sheet = ex::ContactSheet::Create(o);
  ASSERT_TRUE(sheet.ok()) << sheet.status();
  const auto frames = SmoothFrames(5, 64, 48);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*sheet)->Add(frames[static_cast<size_t>(i)], i, 100 + i).ok());
  ex::SheetLayout layout;
  auto image = (*sheet)->Finish(1 << 24, &layout);
  ASSERT_TRUE(image.ok());
  ASSERT_EQ(layout.cells.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const cv::Rect cell = layout.cells[static_cast<size_t>(i)];
    EXPECT_EQ(cell.size(), cv::Size(32, 24));
    cv::Mat want, diff;
    cv::resize(frames[static_cast<size_t>(i)], want, cell.size(), 0, 0, cv::INTER_AREA);
    cv::absdiff((*image)(cell), want, diff);
    EXPECT_EQ(cv::countNonZero(diff.reshape(1)), 0) << "cell " << i;
    // Row-major: cell 3 starts the second row, under cell 0.
    const cv::Rect label = layout.labels[static_cast<size_t>(i)];
    EXPECT_EQ(label.y, cell.y + cell.height);
    cv::Mat gray;
    cv::cvtColor((*image)(label), gray, cv::COLOR_RGB2GRAY);
    EXPECT_GT(cv::countNonZero(gray < 128), 5) << "label " << i << " has text";
  }
  EXPECT_EQ(layout.cells[3].x, layout.cells[0].x);
  EXPECT_GT(layout.cells[3].y, layout.cells[0].y);
  cv::Mat header;
  cv::cvtColor((*image)(layout.header), header, cv::COLOR_RGB2GRAY);
  EXPECT_GT(cv::countNonZero(header < 128), 20);
  // The size limit is refused with a message, not allocated.
  auto big = (*sheet)->Finish(1000);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(ExportOptionsTest, FormatsAndBadValues) {
  auto o = ex::ParseExportOptions(nlohmann::json::parse(R"j({"enabled": true, "format": ["gif", "Frame", "MP4", "sheet"]})j"));
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->formats, (std::vector<std::string>{"GIF", "MP4", "SHEET"}));
  o = ex::ParseExportOptions(nlohmann::json::parse(R"j({"formats": ["AVI"]})j"));
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("GIF, MP4, WEBM, WEBP, PNG, TXT, SHEET"));
  for (const char* bad : {R"j({"fps": 0})j", R"j({"fps": 10000})j", R"j({"loop_number": -1})j",
                          R"j({"gif_dither": "rainbow"})j", R"j({"sheet": {"background": "red"}})j"}) {
    EXPECT_EQ(ex::ParseExportOptions(nlohmann::json::parse(bad)).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  // Frames of another size fail that video, with the sizes named.
  ex::VideoOptions v;
  v.format = "gif";
  v.width = 16;
  v.height = 16;
  auto w = ex::AvVideoWriter::Open(v);
  ASSERT_TRUE(w.ok());
  std::vector<uint8_t> pixels(32 * 16 * 3);
  EXPECT_THAT(std::string((*w)->AddFrame(pixels.data(), 32, 16).message()), HasSubstr("32x16 but the gif is 16x16"));
  EXPECT_EQ((*w)->Finish().status().code(), absl::StatusCode::kInvalidArgument);  // zero frames
}

}  // namespace
}  // namespace atelier
