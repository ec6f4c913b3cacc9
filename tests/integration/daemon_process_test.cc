// The real atelierd and atelier binaries as separate processes: start, serve the client's commands, exit 0 on
// SIGTERM; bad flags and an unavailable device fail clearly.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <ATen/ATen.h>

#include "atelier/plugin.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/models/runtime.h"
#include "image/image_formats.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A bfloat16 image beside its float32 golden (tiny random-weight model, a few steps): 8 bits of mantissa in every
// conv and matmul, accumulated in float32. The public case measures max 14 and mean 1.75 levels; a wrong model or
// sampler is off by tens of levels on average.
constexpr int kBf16MaxLevelDiff = 32;
constexpr double kBf16MaxMeanLevelDiff = 4.0;
using namespace std::chrono_literals;

struct Result {
  int exit_code = -1;
  std::string output;
};

// Runs a command line, capturing stdout and stderr.
Result RunCommand(const std::string& command) {
  Result result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

class DaemonProcess {
 public:
  // Starts atelierd with stdout/stderr in files; waits for the "listening on" line. The tests compare with float32
  // goldens, so it computes in float32 unless `extra_args` name a --dtype (auto picks bfloat16 on AVX512_BF16/AMX).
  bool Start(std::vector<std::string> extra_args) {
    if (std::find(extra_args.begin(), extra_args.end(), "--dtype") == extra_args.end()) {
      extra_args.insert(extra_args.begin(), {"--dtype", "float32"});
    }
    out_path_ = dir_.path() / "out.txt";
    err_path_ = dir_.path() / "err.txt";
    pid_ = fork();
    if (pid_ == 0) {
      freopen(out_path_.c_str(), "w", stdout);
      freopen(err_path_.c_str(), "w", stderr);
      std::vector<std::string> args = {testing::DaemonBinary().string(), "--listen", "127.0.0.1:0",
                                       "--models-dir", (dir_.path() / "models").string()};
      args.insert(args.end(), extra_args.begin(), extra_args.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 300; ++i) {
      std::ifstream in(out_path_);
      std::string line;
      if (std::getline(in, line) && line.rfind("atelierd listening on ", 0) == 0) {
        address_ = line.substr(std::string("atelierd listening on ").size());
        return true;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  // Sends `signal` and waits for exit; returns the exit code (or -1 on timeout / abnormal end).
  int Stop(int signal = SIGTERM, std::chrono::seconds timeout = 20s) {
    if (pid_ <= 0) return -1;
    kill(pid_, signal);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }

  ~DaemonProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  std::string Client(const std::string& args, int* exit_code) {
    const Result r = RunCommand(testing::ClientBinary().string() + " --server " + address_ + " " + args);
    *exit_code = r.exit_code;
    return r.output;
  }
  std::string Log() const {
    std::ifstream in(err_path_);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  const testing::TempDir& dir() const { return dir_; }

 private:
  testing::TempDir dir_;
  std::filesystem::path out_path_, err_path_;
  pid_t pid_ = -1;
  std::string address_;
};

TEST(DaemonProcessTest, ServesTheClientAndExitsCleanlyOnSigterm) {
  DaemonProcess daemon;
  std::filesystem::create_directories(daemon.dir().path() / "models/Stable-diffusion");
  std::ofstream(daemon.dir().path() / "models/Stable-diffusion/anime.safetensors") << "not really a model";
  ASSERT_TRUE(daemon.Start({})) << daemon.Log();
  int code = -1;
  std::string out = daemon.Client("health", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("SERVING"));
  out = daemon.Client("version", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("API atelier.v1, plugin ABI 1." + std::to_string(ATELIER_PLUGIN_ABI_MINOR)));
  out = daemon.Client("plugins", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("invert"));  // the template plugin from build/plugins, the default --plugins-dir
  EXPECT_THAT(out, HasSubstr("grayscale"));  // the C example
  out = daemon.Client("invoke invert detect '{\"x\": 1}'", &code);
  EXPECT_EQ(code, 5) << out;  // FAILED_PRECONDITION: the template works only inside a generation
  EXPECT_THAT(out, HasSubstr("works only inside a generation"));
  out = daemon.Client("models", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("anime.safetensors"));
  out = daemon.Client("cancel no-such-job", &code);
  EXPECT_EQ(code, 4) << out;  // NOT_FOUND has its own exit code
  EXPECT_THAT(out, HasSubstr("no queued or running job 'no-such-job'"));
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
  EXPECT_THAT(daemon.Log(), HasSubstr("draining"));
  EXPECT_THAT(daemon.Log(), HasSubstr("stopped"));
}

// The models atelierd ships (--assets-dir's models/) come after the user's folders and are listed as shipped: a
// ControlNet only the assets have is found and marked, one the user also has is the user's.
TEST(DaemonProcessTest, ShippedPluginModelsExtendTheUsersFolders) {
  namespace fs = std::filesystem;
  const fs::path controlnet = testing::FixturesDir() / "controlnet-tiny" / "weights.safetensors";
  ASSERT_TRUE(fs::exists(controlnet)) << controlnet;
  DaemonProcess daemon;
  const fs::path assets = daemon.dir().path() / "assets";
  fs::create_directories(assets / "models" / "ControlNet");
  fs::create_directory_symlink(fs::path(ATELIER_SOURCE_DIR) / "assets" / "clip", assets / "clip");
  fs::copy_file(controlnet, assets / "models" / "ControlNet" / "shipped_canny.safetensors");
  fs::copy_file(controlnet, assets / "models" / "ControlNet" / "both.safetensors");
  fs::create_directories(daemon.dir().path() / "models" / "ControlNet");
  fs::copy_file(controlnet, daemon.dir().path() / "models" / "ControlNet" / "both.safetensors");
  ASSERT_TRUE(daemon.Start({"--assets-dir", assets.string(), "--no-default-model"})) << daemon.Log();
  EXPECT_THAT(daemon.Log(), HasSubstr("shipped models (after the user's folders): " + (assets / "models").string()));
  int code = -1;
  const std::string out = daemon.Client("models", &code);
  EXPECT_EQ(code, 0) << out;
  std::string shipped_line, both_line;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("shipped_canny.safetensors") != std::string::npos) shipped_line = line;
    if (line.find("both.safetensors") != std::string::npos) both_line = line;
  }
  EXPECT_THAT(shipped_line, HasSubstr("ControlNet"));
  EXPECT_THAT(shipped_line, HasSubstr("(shipped with atelierd)"));
  EXPECT_THAT(both_line, HasSubstr("ControlNet"));
  EXPECT_THAT(both_line, Not(HasSubstr("shipped")));
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
}

// The model registry over gRPC: the first checkpoint loads at start, a failing load keeps it serving.
TEST(DaemonProcessTest, LoadsCheckpointsAndKeepsTheOldOneOnFailure) {
  namespace fs = std::filesystem;
  const auto tiny = testing::CasesOf("tiny-sd");
  ASSERT_FALSE(tiny.empty());
  DaemonProcess daemon;
  const fs::path sd =
      testing::InstallTinyCheckpoint(testing::WeightsFile(tiny.front()), daemon.dir().path() / "models");
  std::ofstream(sd / "zz-broken.safetensors") << "garbage";
  ASSERT_TRUE(daemon.Start({"--cache-dir", (daemon.dir().path() / "cache").string()})) << daemon.Log();
  EXPECT_THAT(daemon.Log(), HasSubstr("loaded tiny.safetensors ["));
  int code = -1;
  std::string out = daemon.Client("status", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("checkpoint: tiny.safetensors ["));
  EXPECT_THAT(out, HasSubstr("SD1.x, VAE: checkpoint, config: yaml tiny.yaml"));
  out = daemon.Client("models", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("SD1.x"));
  EXPECT_THAT(out, HasSubstr("unusable: 'zz-broken.safetensors' is neither safetensors nor a PyTorch checkpoint"));
  out = daemon.Client("load zz-broken.safetensors", &code);
  EXPECT_EQ(code, 5) << out;
  EXPECT_THAT(out, HasSubstr("checkpoint: tiny.safetensors ["));  // still serving
  out = daemon.Client("load sd_xl_base_1.0", &code);
  EXPECT_EQ(code, 4) << out;
  EXPECT_THAT(out, HasSubstr("available: tiny.safetensors, zz-broken.safetensors"));
  out = daemon.Client("unload", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("(none loaded)"));
  out = daemon.Client("load tiny", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("weights:"));
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
}

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The first line of the client's stdout that names a written file.
std::string SavedPath(const std::string& output, const std::string& dir) {
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(dir, 0) == 0) return line;
  }
  return "";
}

// The fixture's txt2img through the real daemon and client with `dtype`; the PNG the client writes has the fixture's
// pixels (within `max_level_diff`, or a mean of `max_mean_level_diff`) and the request's infotext, which
// `atelier info` reads back. Returns the infotext's settings line.
void FixtureTxt2ImgThroughTheClient(const testing::FixtureCase& c, const std::string& dtype, int max_level_diff,
                                    double max_mean_level_diff) {
  namespace fs = std::filesystem;
  DaemonProcess daemon;
  testing::InstallTinyCheckpoint(testing::WeightsFile(c), daemon.dir().path() / "models");
  ASSERT_TRUE(daemon.Start({"--dtype", dtype, "--cache-dir", (daemon.dir().path() / "cache").string()}))
      << daemon.Log();
  const auto& v = c.json["values"];
  const fs::path out_dir = daemon.dir().path() / "out";
  std::string eta;  // null: WebUI's default for the sampler
  if (v.contains("eta") && v["eta"].is_number()) eta = absl::StrCat(" --eta ", v["eta"].get<double>());
  const std::string args = absl::StrCat(
      "txt2img --prompt '", v["prompt"].get<std::string>(), "' --negative-prompt '",
      v["negative_prompt"].get<std::string>(), "' --seed ", v["seed"].get<int64_t>(), " --steps ",
      v["steps"].get<int>(), " --sampler '", v["sampler"].get<std::string>(), "' --scheduler '",
      v["schedule_type"].get<std::string>(), "' --cfg-scale ", v["cfg_scale"].get<double>(), " -W ",
      v["width"].get<int>(), " -H ", v["height"].get<int>(), " --clip-skip ", v["clip_skip"].get<int>(),
      " --rng ", v["randn_source"].get<std::string>(), eta, " --previews ", (out_dir / "previews").string(), " -o ",
      out_dir.string());
  int code = -1;
  const std::string out = daemon.Client(args, &code);
  ASSERT_EQ(code, 0) << out << daemon.Log();
  EXPECT_THAT(out, HasSubstr("progress 100%"));  // not a terminal: plain progress lines
  const std::string saved = SavedPath(out, out_dir.string());
  ASSERT_EQ(fs::path(saved).filename().string(), absl::StrCat("00000-", v["seed"].get<int64_t>(), ".png")) << out;
  auto image = engine::DecodeImageRgb(ReadAll(saved));
  ASSERT_TRUE(image.ok()) << image.status();
  const at::Tensor got = at::from_blob(image->pixels.data(), {image->height, image->width, 3}, at::kByte);
  const at::Tensor want = c.io.at("image_uint8");
  ASSERT_EQ(got.sizes(), want.sizes());
  const at::Tensor diff = (got.to(at::kInt) - want.to(at::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), max_level_diff) << dtype;
  EXPECT_LE(diff.to(at::kDouble).mean().item<double>(), max_mean_level_diff) << dtype;
  // The same infotext in every dtype: WebUI's has no dtype, and the numbers are the same request's.
  const std::string settings = absl::StrCat("Steps: ", v["steps"].get<int>(), ", Sampler: ",
                                            v["sampler"].get<std::string>(), ", Schedule type: ",
                                            v["schedule_type"].get<std::string>(), ", CFG scale: ",
                                            v["cfg_scale"].dump(), ", Seed: ", v["seed"].get<int64_t>());
  EXPECT_THAT(out, HasSubstr(settings));
  EXPECT_THAT(out, Not(HasSubstr("float")));
  EXPECT_FALSE(fs::is_empty(out_dir / "previews"));
  const Result info = RunCommand(testing::ClientBinary().string() + " info " + saved);
  EXPECT_EQ(info.exit_code, 0) << info.output;
  EXPECT_THAT(info.output, HasSubstr(v["prompt"].get<std::string>() + "\n" + settings));
  // The next image continues WebUI's numbering.
  const std::string again = daemon.Client(args + " -q", &code);
  EXPECT_EQ(code, 0) << again;
  EXPECT_EQ(fs::path(SavedPath(again, out_dir.string())).filename().string(),
            absl::StrCat("00001-", v["seed"].get<int64_t>(), ".png"));
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
}

// The README's main job: the real daemon, the real client, the fixture's request, in float32: WebUI's pixels (+-1).
TEST(DaemonProcessTest, Txt2ImgThroughTheClientMakesTheFixtureImage) {
  for (const auto& c : testing::CasesOf("txt2img-tiny")) {
    SCOPED_TRACE(c.dir.string());
    FixtureTxt2ImgThroughTheClient(c, "float32", 1, 1.0);
  }
}

// --dtype auto (the default): bfloat16 on CPUs with AVX512_BF16 or AMX-BF16, float32 elsewhere. The choice and its
// reason are logged and reported by `atelier version`; a bfloat16 image stays close to the float32 golden and keeps
// its infotext.
TEST(DaemonProcessTest, AutoDtypeIsLoggedReportedAndKeepsTheImageAndInfotext) {
  const engine::CpuFeatures cpu = engine::DetectCpuFeatures();
  auto expected = engine::ResolveComputeDtype("auto", "cpu", cpu);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(expected->dtype, engine::CpuBf16Native(cpu) ? "bfloat16" : "float32");
  {
    DaemonProcess daemon;
    ASSERT_TRUE(daemon.Start({"--dtype", "auto", "--cache-dir", (daemon.dir().path() / "cache").string()}))
        << daemon.Log();
    EXPECT_THAT(daemon.Log(), HasSubstr(absl::StrCat("compute dtype ", expected->dtype, " (", expected->reason)));
    int code = -1;
    const std::string out = daemon.Client("version", &code);
    EXPECT_EQ(code, 0) << out;
    EXPECT_THAT(out, HasSubstr(absl::StrCat("compute dtype ", expected->dtype, " (", expected->reason, ")")));
    EXPECT_THAT(out, HasSubstr(engine::CpuFeatureList(cpu)));
    EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
  }
  for (const auto& c : testing::CasesOf("txt2img-tiny")) {
    SCOPED_TRACE(c.dir.string());
    if (expected->dtype == "float32") {
      FixtureTxt2ImgThroughTheClient(c, "auto", 1, 1.0);
    } else {
      FixtureTxt2ImgThroughTheClient(c, "auto", kBf16MaxLevelDiff, kBf16MaxMeanLevelDiff);
    }
  }
}

// With no checkpoint at all the daemon serves the embedded tiny model; the client takes a WebUI API payload as is
// (base64 init image with a data: prefix) and reports bad requests with their exit codes.
TEST(DaemonProcessTest, EmbeddedModelAndWebUiPayloads) {
  namespace fs = std::filesystem;
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start({"--cache-dir", (daemon.dir().path() / "cache").string()})) << daemon.Log();
  EXPECT_THAT(daemon.Log(), HasSubstr("serving the embedded model"));
  int code = -1;
  const fs::path out_dir = daemon.dir().path() / "out";
  std::string out = daemon.Client("txt2img -p 'a cat' -W 64 -H 64 --steps 2 --seed 5 -o " + out_dir.string(), &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("Model: atelier-shapes"));
  const std::string first = SavedPath(out, out_dir.string());
  // Without a size the job gets the size the embedded checkpoint declares (64x64), not WebUI's 512.
  const std::string native = daemon.Client("txt2img -p 'a red circle' --steps 2 --seed 5 -o " + out_dir.string(), &code);
  ASSERT_EQ(code, 0) << native;
  EXPECT_THAT(native, HasSubstr("Size: 64x64"));
  const std::string png = ReadAll(first);
  // Re-running an image from its infotext makes the same image.
  out = daemon.Client("txt2img --from " + first + " -o " + out_dir.string(), &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("a cat\nSteps: 2, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 5, "
                             "Size: 64x64"));
  auto a = engine::DecodeImageRgb(png), b = engine::DecodeImageRgb(ReadAll(SavedPath(out, out_dir.string())));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->pixels, b->pixels);

  const fs::path payload = daemon.dir().path() / "img2img.json";
  std::ofstream(payload) << R"({"prompt": "a dog", "negative_prompt": null, "steps": 3, "width": 64, "height": 64,
    "seed": 8, "sampler_index": "Euler a", "denoising_strength": 0.6, "send_images": true, "save_images": false,
    "override_settings": {"CLIP_stop_at_last_layers": 2}, "init_images": ["data:image/png;base64,)"
                         << absl::Base64Escape(png) << R"("]})";
  out = daemon.Client("img2img --json " + payload.string() + " -o " + out_dir.string(), &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("a dog\nSteps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 8"));
  EXPECT_THAT(out, HasSubstr("Denoising strength: 0.6, Clip skip: 2"));

  // Inpainting and hires fix from the command line.
  engine::PixelImage mask;
  mask.width = mask.height = 64;
  mask.pixels.assign(64 * 64 * 3, 0);
  for (int y = 16; y < 48; ++y) std::fill_n(mask.pixels.begin() + (y * 64 + 16) * 3, 32 * 3, 255);
  std::ofstream(daemon.dir().path() / "mask.png", std::ios::binary) << *engine::EncodePng(mask);
  out = daemon.Client("img2img -p 'a dog' --steps 3 -W 64 -H 64 --init-image " + first + " --mask " +
                          (daemon.dir().path() / "mask.png").string() + " --inpainting-fill 2 -o " + out_dir.string(),
                      &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("Mask blur: 4, Inpaint area: Only masked, Masked area padding: 0, Masked content: "
                             "latent noise"));
  out = daemon.Client("txt2img -p 'a cat' --steps 2 -W 64 -H 64 --hires --hr-scale 1.5 --hr-steps 2 "
                      "--denoising-strength 0.6 -o " + out_dir.string(), &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("Size: 64x64, Model hash: "));
  EXPECT_THAT(out, HasSubstr("Denoising strength: 0.6, Hires upscale: 1.5, Hires steps: 2"));
  auto hires = engine::DecodeImageRgb(ReadAll(SavedPath(out, out_dir.string())));
  ASSERT_TRUE(hires.ok());
  EXPECT_EQ(hires->width, 96);

  out = daemon.Client("txt2img -p x --sampler 'Euler z'", &code);
  EXPECT_EQ(code, 5) << out;
  EXPECT_THAT(out, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(out, HasSubstr("DPM++ 2M"));
  out = daemon.Client("txt2img -p x --checkpoint nope", &code);
  EXPECT_EQ(code, 4) << out;
  out = daemon.Client("img2img -p x --init-image " + payload.string(), &code);
  EXPECT_EQ(code, 5) << out;
  EXPECT_THAT(out, HasSubstr("init_images[0]: not a PNG, JPEG or WebP image"));
  out = daemon.Client("txt2img -p x --override enable_hr=true --json /no/such.json", &code);
  EXPECT_EQ(code, 4) << out;
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
}

TEST(DaemonProcessTest, ConvertsPicklesLocally) {
  testing::TempDir dir;
  const std::string ckpt = (testing::FixturesDir() / "ckpt-formats" / "zip_wrapped.ckpt").string();
  const std::string out_file = (dir.path() / "out.safetensors").string();
  Result r = RunCommand(testing::ClientBinary().string() + " convert " + ckpt + " " + out_file + " --fp16");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("from a zip pickle"));
  EXPECT_TRUE(std::filesystem::exists(out_file));
  r = RunCommand(testing::ClientBinary().string() + " convert " +
                 (testing::FixturesDir() / "ckpt-formats" / "evil.ckpt").string() + " " + out_file + ".evil");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_THAT(r.output, HasSubstr("nothing was run"));
  EXPECT_FALSE(std::filesystem::exists("/tmp/atelier-pwned"));
}

TEST(DaemonProcessTest, SigintAlsoDrains) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start({})) << daemon.Log();
  EXPECT_EQ(daemon.Stop(SIGINT), 0) << daemon.Log();
}

TEST(DaemonProcessTest, ClientWithoutDaemonSaysSo) {
  // Port 1 on loopback: nothing listens there.
  const Result r = RunCommand(testing::ClientBinary().string() + " --server 127.0.0.1:1 --timeout 2 health");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_THAT(r.output, HasSubstr("is atelierd running on 127.0.0.1:1?"));
}

TEST(DaemonProcessTest, BadFlagsAndUnavailableDeviceFailClearly) {
  Result r = RunCommand(testing::DaemonBinary().string() + " --no-such-flag");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = RunCommand(testing::DaemonBinary().string() + " --log-level loud");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("valid: debug, info, warning, error"));
  r = RunCommand(testing::DaemonBinary().string() + " --device tpu --listen 127.0.0.1:0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("unknown device 'tpu'; valid: cpu, cuda, cuda:N"));
  r = RunCommand(testing::DaemonBinary().string() + " --dtype float64 --listen 127.0.0.1:0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("unknown --dtype 'float64'; valid: auto, float32, bfloat16, float16"));
  r = RunCommand(testing::DaemonBinary().string() + " --dtype float16 --listen 127.0.0.1:0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--dtype float16 is for CUDA"));
  // A port another process already listens on.
  const int busy = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(busy, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(busy, 1), 0);
  socklen_t length = sizeof(addr);
  getsockname(busy, reinterpret_cast<sockaddr*>(&addr), &length);
  const std::string address = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  r = RunCommand(testing::DaemonBinary().string() + " --listen " + address);
  close(busy);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("cannot listen on " + address));
}

}  // namespace
}  // namespace atelier
