// Image files as WebUI writes and reads them: EXIF UserComment ("UNICODE\0" + UTF-16BE, piexif's layout) in JPEG and
// WebP, PNG's parameters chunk, sniffing and decoding of every format with transparency flattened onto white, and
// corrupt files refused with INVALID_ARGUMENT; plus WebUI's img2img resize modes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "image/image_formats.h"
#include "engine/pipeline/img2img_resize.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;

engine::PixelImage Gradient(int width, int height) {
  engine::PixelImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* p = &image.pixels[(static_cast<size_t>(y) * width + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / (width - 1));
      p[1] = static_cast<uint8_t>(y * 255 / (height - 1));
      p[2] = 128;
    }
  }
  return image;
}

double MeanAbsDiff(const engine::PixelImage& a, const engine::PixelImage& b) {
  double sum = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) sum += std::abs(int(a.pixels[i]) - int(b.pixels[i]));
  return sum / a.pixels.size();
}

const std::string kInfotext =
    "1girl, 狐, \"quoted\"\nNegative prompt: lowres\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, "
    "CFG scale: 7.0, Seed: 1234, Size: 64x48";

TEST(ImageFormatsTest, ExifUserCommentHasPiexifsLayout) {
  const std::string exif = engine::ExifWithUserComment("hé狐");
  EXPECT_EQ(exif.substr(0, 8), std::string("MM\0*\0\0\0\x08", 8));
  // "UNICODE\0" then UTF-16BE: h = 00 68, é = 00 E9, 狐 = 72 D0.
  EXPECT_THAT(exif, HasSubstr(std::string("UNICODE\0\0h\0\xE9\x72\xD0", 14)));
  EXPECT_EQ(engine::UserCommentFromExif(exif), "hé狐");
  EXPECT_EQ(engine::UserCommentFromExif(engine::ExifWithUserComment(kInfotext)), kInfotext);
}

TEST(ImageFormatsTest, ReadsLittleEndianAsciiUserComments) {
  // II*, IFD0 at 8 with the Exif pointer, Exif IFD at 26 with UserComment "ASCII\0\0\0hello" at 44.
  std::string tiff("II*\0\x08\0\0\0", 8);
  tiff += std::string("\x01\0\x69\x87\x04\0\x01\0\0\0\x1a\0\0\0\0\0\0\0", 18);
  tiff += std::string("\x01\0\x86\x92\x07\0\x0d\0\0\0\x2c\0\0\0\0\0\0\0", 18);
  tiff += std::string("ASCII\0\0\0hello", 13);
  EXPECT_EQ(engine::UserCommentFromExif(tiff), "hello");
  EXPECT_EQ(engine::UserCommentFromExif(tiff.substr(0, 30)), std::nullopt);  // truncated
  EXPECT_EQ(engine::UserCommentFromExif("garbage"), std::nullopt);
  // Offsets and counts pointing outside the block, an IFD at its very end: nothing is read out of bounds.
  std::string bad_offset = tiff;
  bad_offset[26 + 2 + 8] = '\x7f';  // UserComment data offset far beyond the end
  EXPECT_EQ(engine::UserCommentFromExif(bad_offset), std::nullopt);
  std::string bad_count = tiff;
  bad_count[26 + 2 + 4] = '\x7f';  // count larger than the block
  EXPECT_EQ(engine::UserCommentFromExif(bad_count), std::nullopt);
  std::string ifd_at_end = tiff.substr(0, 8);
  ifd_at_end[4] = 8;  // IFD0 at offset 8 = the end of the block
  EXPECT_EQ(engine::UserCommentFromExif(ifd_at_end), std::nullopt);
  std::string huge_ifd = tiff;
  huge_ifd[8] = '\xff';
  huge_ifd[9] = '\xff';   // 65535 entries claimed,
  huge_ifd[10] = '\x00';  // none of them the Exif pointer: the scan stops at the end of the block
  EXPECT_EQ(engine::UserCommentFromExif(huge_ifd), std::nullopt);
}

TEST(ImageFormatsTest, EveryFormatRoundTripsPixelsAndInfotext) {
  const engine::PixelImage image = Gradient(64, 48);
  for (const auto format : {engine::ImageFileFormat::kPng, engine::ImageFileFormat::kJpeg,
                            engine::ImageFileFormat::kWebp}) {
    engine::ImageEncodeOptions options;
    options.format = format;
    options.infotext = kInfotext;
    auto data = engine::EncodeImage(image, options);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(engine::SniffImageFormat(*data), format);
    auto decoded = engine::DecodeImageRgb(*data);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->width, 64);
    EXPECT_EQ(decoded->height, 48);
    ASSERT_EQ(decoded->channels, 3);
    if (format == engine::ImageFileFormat::kPng) {
      EXPECT_EQ(decoded->pixels, image.pixels);
    } else {
      EXPECT_LT(MeanAbsDiff(*decoded, image), 3.0) << engine::ImageMimeType(format);
    }
    auto infotext = engine::ReadInfotext(*data);
    ASSERT_TRUE(infotext.ok()) << infotext.status();
    EXPECT_EQ(*infotext, kInfotext) << engine::ImageMimeType(format);
    options.infotext.clear();
    infotext = engine::ReadInfotext(*engine::EncodeImage(image, options));
    ASSERT_TRUE(infotext.ok()) << infotext.status();
    EXPECT_EQ(*infotext, "");
  }
}

// NovelAI PNGs carry no "parameters": WebUI builds the infotext from Description and the Comment JSON.
TEST(ImageFormatsTest, NovelAiPngsReadAsWebUiInfotext) {
  const std::string png = *engine::EncodePng(
      Gradient(64, 48),
      {{"Software", "NovelAI"},
       {"Description", "1girl, {silver hair}"},
       {"Comment", R"({"steps": 28, "sampler": "k_euler_ancestral", "seed": 123, "scale": 11, "uc": "lowres"})"}});
  auto infotext = engine::ReadInfotext(png);
  ASSERT_TRUE(infotext.ok()) << infotext.status();
  EXPECT_EQ(*infotext,
            "1girl, {silver hair}\nNegative prompt: lowres\nSteps: 28, Sampler: Euler a, CFG scale: 11, Seed: 123, "
            "Size: 64x48, Clip skip: 2, ENSD: 31337");
}

TEST(ImageFormatsTest, TransparencyIsFlattenedOntoWhite) {
  engine::PixelImage rgba;
  rgba.width = 2;
  rgba.height = 1;
  rgba.channels = 4;
  rgba.pixels = {10, 20, 30, 0, 10, 20, 30, 255};
  auto decoded = engine::DecodeImageRgb(*engine::EncodePng(rgba));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->pixels, (std::vector<uint8_t>{255, 255, 255, 10, 20, 30}));
}

TEST(ImageFormatsTest, CorruptFilesAreInvalidArguments) {
  engine::ImageEncodeOptions jpeg;
  jpeg.format = engine::ImageFileFormat::kJpeg;
  const std::string good = *engine::EncodeImage(Gradient(32, 32), jpeg);
  engine::ImageEncodeOptions webp;
  webp.format = engine::ImageFileFormat::kWebp;
  const std::string good_webp = *engine::EncodeImage(Gradient(32, 32), webp);
  const std::string png = *engine::EncodePng(Gradient(32, 32));
  for (const std::string& bad : {std::string("hello"), std::string(), good.substr(0, 40), good_webp.substr(0, 30),
                                 png.substr(0, 50), std::string("\xFF\xD8\xFF\xE0garbage", 11)}) {
    auto decoded = engine::DecodeImageRgb(bad);
    ASSERT_FALSE(decoded.ok()) << bad.size();
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << decoded.status();
  }
  EXPECT_EQ(engine::ReadInfotext("hello").status().code(), absl::StatusCode::kInvalidArgument);
}

at::Tensor Image(int width, int height) {
  return at::arange(static_cast<int64_t>(width) * height * 3).remainder(251).to(at::kByte).reshape({height, width, 3});
}

TEST(Img2ImgResizeTest, CropAndResizeKeepsTheCentre) {
  const at::Tensor image = Image(200, 100);
  auto out = engine::ResizeInitImage(image, engine::ResizeMode::kCropAndResize, 100, 100);
  ASSERT_TRUE(out.ok()) << out.status();
  // Covering 100x100 needs no scaling here; WebUI pastes at x = 50 - 100 = -50: columns 50..149 remain.
  EXPECT_TRUE(at::equal(*out, image.slice(1, 50, 150)));
}

TEST(Img2ImgResizeTest, ResizeAndFillStretchesTheEdgesIntoTheBands) {
  const at::Tensor image = Image(100, 50);
  auto out = engine::ResizeInitImage(image, engine::ResizeMode::kResizeAndFill, 100, 100);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), (std::vector<int64_t>{100, 100, 3}));
  EXPECT_TRUE(at::equal(out->slice(0, 25, 75), image));
  EXPECT_TRUE(at::equal(out->slice(0, 0, 25), image.slice(0, 0, 1).expand({25, 100, 3})));
  EXPECT_TRUE(at::equal(out->slice(0, 75), image.slice(0, 49, 50).expand({25, 100, 3})));
}

TEST(Img2ImgResizeTest, ResizeAndFillStretchesTheSideColumnsForTallImages) {
  const at::Tensor image = Image(50, 100);
  auto out = engine::ResizeInitImage(image, engine::ResizeMode::kResizeAndFill, 100, 100);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::equal(out->slice(1, 25, 75), image));
  EXPECT_TRUE(at::equal(out->slice(1, 0, 25), image.slice(1, 0, 1).expand({100, 25, 3})));
  EXPECT_TRUE(at::equal(out->slice(1, 75), image.slice(1, 49, 50).expand({100, 25, 3})));
}

TEST(Img2ImgResizeTest, JustResizeAndLatentUpscaleSizes) {
  const at::Tensor image = Image(100, 60);
  auto stretched = engine::ResizeInitImage(image, engine::ResizeMode::kJustResize, 64, 128);
  ASSERT_TRUE(stretched.ok());
  EXPECT_EQ(stretched->sizes(), (std::vector<int64_t>{128, 64, 3}));
  // A uniform image stays uniform (no ringing at the borders).
  auto flat = engine::ResizeInitImage(at::full({60, 100, 3}, 77, at::kByte), engine::ResizeMode::kJustResize, 64, 128);
  EXPECT_TRUE(flat->eq(77).all().item<bool>());
  auto latent = engine::ResizeInitImage(image, engine::ResizeMode::kLatentUpscale, 512, 512);
  ASSERT_TRUE(latent.ok());
  EXPECT_TRUE(at::equal(*latent, image.slice(0, 0, 56).slice(1, 0, 96)));  // cropped to multiples of 8
  EXPECT_EQ(engine::ResizeInitImage(image, static_cast<engine::ResizeMode>(7), 64, 64).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine::ResizeInitImage(at::zeros({4, 4}, at::kByte), engine::ResizeMode::kJustResize, 64, 64)
                .status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace atelier
