// PNG encoding/decoding and text chunks (tEXt for Latin-1, iTXt for the rest, as WebUI writes infotext).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "image/image_codec.h"

namespace atelier {
namespace {

engine::PixelImage Gradient(int width, int height, int channels) {
  engine::PixelImage image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < channels; ++c) image.pixels.push_back(static_cast<std::uint8_t>((x * 7 + y * 13 + c * 50) & 0xFF));
  return image;
}

TEST(ImageCodecTest, PngRoundTripIsLossless) {
  for (int channels : {3, 4}) {
    const engine::PixelImage image = Gradient(37, 21, channels);
    auto png = engine::EncodePng(image);
    ASSERT_TRUE(png.ok()) << png.status();
    EXPECT_EQ(png->substr(1, 3), "PNG");
    auto decoded = engine::DecodePng(*png);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->width, 37);
    EXPECT_EQ(decoded->height, 21);
    EXPECT_EQ(decoded->channels, channels);
    EXPECT_EQ(decoded->pixels, image.pixels);
  }
}

TEST(ImageCodecTest, TextChunksRoundTripInLatin1AndUtf8) {
  const std::string latin1 = "a photo of a café, (masterpiece:1.2)\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 8";
  const std::string utf8 = "猫の絵, 🐱\nSteps: 20";
  auto png = engine::EncodePng(Gradient(8, 8, 3), {{"parameters", latin1}, {"comment", utf8}});
  ASSERT_TRUE(png.ok()) << png.status();
  // tEXt for the Latin-1 value, iTXt for the other.
  EXPECT_NE(png->find("tEXtparameters"), std::string::npos);
  EXPECT_NE(png->find("iTXtcomment"), std::string::npos);
  auto text = engine::ReadPngText(*png);
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_EQ(text->size(), 2u);
  EXPECT_EQ((*text)[0].key, "parameters");
  EXPECT_EQ((*text)[0].value, latin1);
  EXPECT_EQ((*text)[1].key, "comment");
  EXPECT_EQ((*text)[1].value, utf8);
}

TEST(ImageCodecTest, BadInputIsAnError) {
  EXPECT_FALSE(engine::DecodePng("not a png").ok());
  EXPECT_FALSE(engine::ReadPngText("\x89PNG\r\n\x1a\n garbage").ok());
  engine::PixelImage wrong = Gradient(4, 4, 3);
  wrong.pixels.pop_back();
  EXPECT_EQ(engine::EncodePng(wrong).status().code(), absl::StatusCode::kInvalidArgument);
  auto png = engine::EncodePng(Gradient(16, 16, 3));
  ASSERT_TRUE(png.ok());
  EXPECT_FALSE(engine::DecodePng(png->substr(0, png->size() / 2)).ok());
}

// A chunk declaring more bytes than the file holds is refused before libpng allocates it (fuzz/image_decode_fuzz
// found a 254-byte file that cost 4.6 GB and 1.5 s per read).
TEST(ImageCodecTest, AChunkLongerThanTheFileIsRefusedAtOnce) {
  auto png = engine::EncodePng(Gradient(8, 6, 3), {{"parameters", "a cat"}});
  ASSERT_TRUE(png.ok());
  // After IHDR (8 + 25 bytes): a chunk of type "zzZz" claiming 0xe8e8e8e8 bytes.
  std::string bomb = png->substr(0, 33) + std::string("\xe8\xe8\xe8\xe8zzZz", 8) + std::string(200, '\xe8');
  for (const auto& status : {engine::DecodePng(bomb).status(), engine::ReadPngText(bomb).status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("more than the file holds"));
  }
  EXPECT_TRUE(engine::DecodePng(*png).ok());
  EXPECT_TRUE(engine::ReadPngText(*png).ok());
}

}  // namespace
}  // namespace atelier
