// atelierd: the Atelier daemon. Owns the device, loads plugins, serves gRPC until SIGINT/SIGTERM.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "atelier/plugin.h"
#include "engine/io/model_folders.h"
#include "engine/text/prompt_styles.h"
#include "engine/models/model_manager.h"
#include "engine/models/runtime.h"
#include "host/hook_watchdog.h"
#include "host/plugin_registry.h"
#include "server/daemon_server.h"
#include "server/metrics_endpoint.h"
#include "server/server_security.h"
#include "engine/text/clip_tokenizer.h"
#include "server/generation_runner.h"
#include "util/limits.h"
#include "main/web_gateway_child.h"
#include "util/log.h"
#include "version.h"

namespace {

namespace fs = std::filesystem;
using namespace atelier;

// Plugins built with the daemon live in "plugins" next to the executable (build/plugins beside build/atelierd).
// Hashes and other caches: $XDG_CACHE_HOME/atelier, else ~/.cache/atelier.
fs::path DefaultCacheDir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') return fs::path(xdg) / "atelier";
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') return fs::path(home) / ".cache/atelier";
  return fs::temp_directory_path() / "atelier-cache";
}

fs::path ExecutableDir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path(".") : exe.parent_path();
}

fs::path DefaultPluginsDir() { return ExecutableDir() / "plugins"; }

// The files the daemon ships (CLIP vocabulary, the embedded model): installed beside the executable's prefix, else
// the source tree it was built from.
fs::path DefaultAssetsDir() {
  const fs::path installed = ExecutableDir().parent_path() / "share" / "atelier" / "assets";
  if (fs::exists(installed / "clip")) return installed;
  return fs::path(ATELIER_SOURCE_ASSETS_DIR);
}

int Run(int argc, char** argv) {
  CLI::App app{"atelierd: Stable Diffusion 1.x daemon with WebUI-compatible gRPC API and plugins"};
  app.set_version_flag("--version", std::string(kAtelierVersion));
  std::string listen = "127.0.0.1:50051";
  std::string models_dir = "models";
  std::string plugins_dir = DefaultPluginsDir().string();
  std::string device = "cpu";
  int threads = 0;
  int max_queue = kDefaultMaxQueue;
  int max_message_mb = kDefaultMaxMessageBytes / (1024 * 1024);
  std::string log_level = "info";
  std::string cache_dir = DefaultCacheDir().string();
  std::string checkpoint;
  std::string vae = "Automatic";
  std::string dtype = "auto";
  std::string assets_dir = DefaultAssetsDir().string();
  bool no_default_model = false;
  app.add_option("--listen", listen, "host:port to serve gRPC on (port 0 picks a free one)")->capture_default_str();
  app.add_option("--models-dir", models_dir,
                 "WebUI models folder (Stable-diffusion/, VAE/, ControlNet/, AnimateDiff/, ...) or a WebUI install "
                 "root (models/, embeddings/)")
      ->capture_default_str();
  app.add_option("--plugins-dir", plugins_dir, "folder of plugin shared libraries (*.so)")->capture_default_str();
  app.add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--dtype", dtype,
                 "compute dtype: auto (float16 on CUDA; bfloat16 on CPUs with AVX512_BF16 or AMX-BF16, float32 on "
                 "others), float32 (WebUI's exact CPU numbers), bfloat16 (CPUs with AVX-512), float16 (CUDA)")
      ->capture_default_str();
  app.add_option("--threads", threads, "compute threads; 0 = $OMP_NUM_THREADS if set, else all cores")->check(CLI::Range(0, 1024));
  int cpu_cache_mb = static_cast<int>(engine::RuntimeOptions{}.cpu_cache_bytes >> 20);
  app.add_option("--cpu-cache-mb", cpu_cache_mb,
                 "free CPU activation blocks kept for reuse between steps (MiB; 0 = libtorch's own allocator)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--max-queue", max_queue, "jobs that may wait before Generate answers RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  std::string outputs_dir;
  std::vector<std::string> styles_files;
  app.add_option("--styles-file", styles_files,
                 "WebUI prompt styles (styles.csv: name,prompt,negative_prompt); repeatable; default: styles.csv of a "
                 "WebUI install given as --models-dir, else <models-dir>/styles.csv");
  app.add_option("--outputs-dir", outputs_dir,
                 "also save the export plugin's files (GIF, MP4, contact sheets) here, in WebUI's "
                 "txt2img-images/AnimateDiff/<date>/ layout; off by default (clients save what they receive)");
  app.add_option("--max-message-mb", max_message_mb, "largest gRPC message (images, artifacts) in MiB")
      ->capture_default_str()
      ->check(CLI::Range(4, 2000));
  double max_job_seconds = -1;
  app.add_option("--max-job-seconds", max_job_seconds,
                 "stop a running job after this many seconds (DEADLINE_EXCEEDED); 0 = no limit; default 3600 on the "
                 "CPU, 600 on CUDA")
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--log-level", log_level, "debug, info, warning or error")->capture_default_str();
  std::string log_format = "text";
  app.add_option("--log-format", log_format, "text (key=value fields) or json (one object per line)")
      ->capture_default_str()->check(CLI::IsMember({"text", "json"}));
  std::string instance_name;
  app.add_option("--instance-name", instance_name,
                 "this daemon's name among several behind a proxy: job ids become NAME-<hex>, and clients send "
                 "'atelier-instance: NAME' with Watch/Cancel/Skip so the proxy routes them here (examples/scale-out)")
      ->check([](const std::string& name) {
        const bool ok = !name.empty() && name.size() <= 32 &&
                        std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
        return ok ? std::string() : std::string("1 to 32 letters, digits or _");
      });
  double plugin_hook_timeout = 900;
  app.add_option("--plugin-hook-timeout", plugin_hook_timeout,
                 "seconds one plugin hook call may run; past it the job fails naming the plugin and the daemon exits "
                 "(code 70) for its supervisor to restart it (0: no limit)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e7));
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on (GET /metrics); off by default");
  std::string http_listen;
  app.add_option("--http-listen", http_listen,
                 "HOST:PORT for WebUI's HTTP API (/sdapi/v1/*) and the live page: starts atelier-web as a child");
  app.add_option("--cache-dir", cache_dir, "where checkpoint hashes are cached (like WebUI's cache.json)")
      ->capture_default_str();
  app.add_option("--checkpoint", checkpoint,
                 "checkpoint to load at start (title, filename or name); default: the first one found");
  app.add_option("--vae", vae, "VAE for that checkpoint: Automatic, None or a file in models/VAE")->capture_default_str();
  app.add_option("--assets-dir", assets_dir, "the files atelierd ships: clip/ (tokenizer) and models/ (embedded model)")
      ->capture_default_str();
  app.add_flag("--no-default-model", no_default_model,
               "do not serve the embedded tiny model when --models-dir has no checkpoint");
  // Security (server/server_security.h): loopback and no tokens by default.
  server::SecurityOptions security_options;
  app.add_option("--auth-tokens", security_options.auth_tokens,
                 "file of bearer tokens, one per line: TOKEN [NAME] [jobs=N queued=N work_per_job=X "
                 "work_per_minute=X job_seconds=X admin]; every call then needs 'authorization: Bearer TOKEN'");
  app.add_option("--tls-cert", security_options.tls_cert, "PEM certificate chain: serve TLS (with --tls-key)");
  app.add_option("--tls-key", security_options.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", security_options.tls_client_ca,
                 "PEM CA bundle: require client certificates signed by it (mutual TLS)");
  app.add_flag("--insecure", security_options.insecure,
               "allow listening beyond loopback with neither tokens nor client certificates");
  std::vector<std::string> open_services = {"health"};
  app.add_option("--auth-open", open_services,
                 "services callable without a token: health, reflection, none (default: health)")
      ->check(CLI::IsMember({"health", "reflection", "none"}));
  // The operator's request limits (server/request_limits.h): each may lower the daemon's hard ceiling.
  server::RequestLimits request_limits;
  app.add_option("--max-image-side", request_limits.max_image_side, "largest width or height of any pass")
      ->capture_default_str()->check(CLI::Range(64, kMaxImageSide));
  app.add_option("--max-image-pixels", request_limits.max_image_pixels,
                 "largest width x height of any pass, hires fix included")
      ->capture_default_str()->check(CLI::Range(std::int64_t{4096}, std::int64_t{kMaxImageSide} * kMaxImageSide));
  app.add_option("--max-images-per-job", request_limits.max_images_per_job, "largest batch_size x n_iter")
      ->capture_default_str()->check(CLI::Range(1, kMaxImagesPerJob));
  app.add_option("--max-steps", request_limits.max_steps, "most sampling steps of any pass")
      ->capture_default_str()->check(CLI::Range(1, kMaxSteps));
  app.add_option("--max-frames", request_limits.max_frames, "longest AnimateDiff video (video_length)")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--max-prompt-tokens", request_limits.max_prompt_tokens, "most CLIP tokens in one prompt")
      ->capture_default_str()->check(CLI::Range(75, 1000000));
  app.add_option("--max-controlnet-units", request_limits.max_controlnet_units, "most enabled ControlNet units")
      ->capture_default_str()->check(CLI::Range(0, 1000));
  int max_plugin_args_kb = static_cast<int>(request_limits.max_plugin_args_bytes / 1024);
  app.add_option("--max-plugin-args-kb", max_plugin_args_kb, "largest alwayson_scripts (plugin arguments), KiB of JSON")
      ->capture_default_str()->check(CLI::Range(1, kMaxScriptArgsBytes / 1024));
  server::DaemonServerOptions grpc_bounds;
  app.add_option("--max-concurrent-streams", grpc_bounds.max_concurrent_streams,
                 "most calls open at once on one client connection")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  int grpc_memory_mb = static_cast<int>(grpc_bounds.grpc_memory_bytes >> 20);
  app.add_option("--grpc-memory-mb", grpc_memory_mb, "memory gRPC may use for connections and messages (MiB)")
      ->capture_default_str()->check(CLI::Range(64, 1 << 20));
  // Per-client quotas (server/client_quotas.h); a token's line may set its own.
  int quota_jobs = 0, quota_queued = 0;
  double quota_work_per_job = 0, quota_work_per_minute = 0;
  app.add_option("--quota-jobs", quota_jobs, "jobs one client may have queued or running at once (0: no limit)")
      ->capture_default_str()->check(CLI::Range(0, 100000));
  app.add_option("--quota-queued", quota_queued, "jobs one client may have waiting at once (0: no limit)")
      ->capture_default_str()->check(CLI::Range(0, 100000));
  app.add_option("--quota-work-per-job", quota_work_per_job,
                 "largest job in megapixel-steps: width x height / 10^6 x steps x images or frames, over every pass "
                 "(512x512, 20 steps, 1 image = 5.2; 0: no limit)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e12));
  app.add_option("--quota-work-per-minute", quota_work_per_minute,
                 "megapixel-steps one client may submit per minute (0: no limit)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e12));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto level = ParseLogLevel(log_level);
  if (!level.ok()) {
    std::fprintf(stderr, "atelierd: %s\n", std::string(level.status().message()).c_str());
    return 2;
  }
  SetLogLevel(*level);
  SetLogFormat(*ParseLogFormat(log_format));

  // Before anything heavy: a port that would be open to the network, or an unreadable key, stops here.
  security_options.listen = listen;
  security_options.open_health = std::count(open_services.begin(), open_services.end(), "health") > 0;
  security_options.open_reflection = std::count(open_services.begin(), open_services.end(), "reflection") > 0;
  auto security = server::BuildServerSecurity(security_options);
  if (!security.ok()) {
    std::fprintf(stderr, "atelierd: %s\n", std::string(security.status().message()).c_str());
    return 2;
  }

  // SIGINT/SIGTERM are taken with sigwait below; block them before any thread starts so none inherits them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto runtime = engine::InitRuntime({device, threads, std::int64_t{cpu_cache_mb} << 20});
  if (!runtime.ok()) {
    LogError(std::string(runtime.status().message()));
    return 1;
  }
  LogInfo(absl::StrCat("atelierd ", kAtelierVersion, " on ", runtime->device, " (", runtime->device_name, "), ",
                       runtime->threads, " threads, libtorch ", runtime->torch_version));
  if (runtime->blas_is_fast) {
    LogInfo(absl::StrCat("BLAS: ", runtime->blas));
  } else {
    LogWarning(absl::StrCat("BLAS is ", runtime->blas, ", not OpenBLAS's OpenMP build: CPU inference is several times "
                            "slower. Run scripts/setup (update-alternatives for libblas.so.3, liblapack.so.3 and "
                            "libopenblas.so.0 to .../openblas-openmp/)"));
  }

  auto tokenizer = engine::ClipTokenizer::Load(fs::path(assets_dir) / "clip");
  if (!tokenizer.ok()) {
    LogError(absl::StrCat("the CLIP tokenizer: ", tokenizer.status().message(), " (set --assets-dir)"));
    return 1;
  }

  std::optional<engine::ModelFolders> folders;
  if (auto opened = engine::ModelFolders::Open(models_dir); opened.ok()) {
    folders = *std::move(opened);
    LogInfo(absl::StrCat("models directory: ", fs::absolute(models_dir).string()));
  } else {
    LogWarning(absl::StrCat(opened.status().message(), "; serving without model files"));
  }
  // Without any checkpoint the daemon still generates: it serves the embedded tiny model.
  if (checkpoint.empty() && !no_default_model &&
      (!folders || folders->List(engine::ModelFolder::kCheckpoint).empty())) {
    auto embedded = engine::ModelFolders::Open(fs::path(assets_dir) / "models");
    if (embedded.ok() && !embedded->List(engine::ModelFolder::kCheckpoint).empty()) {
      // The embedded checkpoint; ControlNets, RIFE models, VAEs, ... still come from the user's folders.
      if (folders) {
        folders->UseCheckpointFolder(embedded->FolderPath(engine::ModelFolder::kCheckpoint));
      } else {
        folders = *std::move(embedded);
      }
      const auto first = folders->List(engine::ModelFolder::kCheckpoint).front();
      LogInfo(absl::StrCat(
          "no checkpoint in ", fs::absolute(models_dir).string(), "/Stable-diffusion: serving the embedded model ",
          (folders->FolderPath(engine::ModelFolder::kCheckpoint) / first.filename).string(),
          " (a tiny SD1.x model trained on shapes and colours at 64x64: ask for e.g. 'a small red circle on the "
          "left, blue background'; see assets/models/README.md). Put a real SD1.x checkpoint (.safetensors or "
          ".ckpt) in <models-dir>/Stable-diffusion and restart, or pass --models-dir to a WebUI install"));
    }
  }

  // The plugin models the daemon ships (assets/models/ControlNet, AnimateDiff, RIFE, ...) come after the user's.
  if (folders) {
    const fs::path shipped = fs::path(assets_dir) / "models";
    folders->AddShippedFolders(shipped);
    LogInfo(absl::StrCat("shipped models (after the user's folders): ", fs::absolute(shipped).string()));
  }

  const engine::CpuFeatures cpu = engine::DetectCpuFeatures();
  auto resolved_dtype = engine::ResolveComputeDtype(dtype, runtime->device, cpu);
  if (!resolved_dtype.ok()) {
    LogError(std::string(resolved_dtype.status().message()));
    return 1;
  }
  const std::string* compute_dtype = &resolved_dtype->dtype;
  LogInfo(absl::StrCat("compute dtype ", *compute_dtype, " (", resolved_dtype->reason, ")",
                       runtime->device == "cpu" ? absl::StrCat("; CPU features: ", engine::CpuFeatureList(cpu)) : ""));
  host::PluginLoaderOptions plugin_options;
  plugin_options.environment.host_version = kAtelierVersion;
  plugin_options.environment.device = runtime->device;
  plugin_options.environment.model_folders = folders ? &*folders : nullptr;
  plugin_options.environment.compute_dtype = *compute_dtype;  // what unet_block's hidden states come in
  auto plugins = host::PluginRegistry::LoadDirectory(plugins_dir, std::move(plugin_options));
  LogInfo(absl::StrCat("plugins: ", plugins->plugins().size(), " loaded (", plugins->NameList(), "), ",
                       plugins->refused().size(), " refused, from ", plugins_dir));

  engine::LoadOptions load_options;
  load_options.device = runtime->device;
  load_options.dtype = *compute_dtype == "float16" ? at::kHalf : *compute_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  engine::ModelManager models(folders ? &*folders : nullptr, fs::path(cache_dir) / "hashes.json", load_options);
  models.set_observer(plugins.get());  // model_loaded / model_unloaded
  // Like WebUI: load the requested checkpoint, else the first one found. Before serving, so no job races it.
  if (!checkpoint.empty() || (folders && !folders->List(engine::ModelFolder::kCheckpoint).empty())) {
    const std::string wanted =
        checkpoint.empty() ? folders->List(engine::ModelFolder::kCheckpoint).front().filename : checkpoint;
    auto loaded = models.Load(wanted, vae);
    if (!loaded.ok()) {
      if (!checkpoint.empty()) {
        LogError(std::string(loaded.status().message()));
        return 1;
      }
      LogWarning(absl::StrCat("no checkpoint loaded: ", loaded.status().message()));
    }
  } else {
    LogInfo("no checkpoint found; put .safetensors/.ckpt files in <models-dir>/Stable-diffusion");
  }
  // The executor thread computes from here on; the main thread's OpenMP workers would only make libgomp throttle.
  engine::ReleaseThreadPoolOfThisThread();

  std::unique_ptr<server::OutputsSaver> outputs;
  if (!outputs_dir.empty()) {
    auto opened = server::OutputsSaver::Open(outputs_dir);
    if (!opened.ok()) {
      LogError(std::string(opened.status().message()));
      return 2;
    }
    outputs = *std::move(opened);
  }
  if (styles_files.empty()) {
    const fs::path root(models_dir);
    styles_files.push_back((root / "styles.csv").string());
    // A WebUI install's models/ folder given directly: its styles.csv is beside it.
    if (root.filename() == "models") styles_files.push_back((root.parent_path() / "styles.csv").string());
  }
  std::vector<fs::path> style_paths(styles_files.begin(), styles_files.end());
  auto styles = engine::PromptStyles::Load(style_paths);
  if (!styles.ok()) {
    LogError(absl::StrCat("prompt styles: ", styles.status().message()));
    return 2;
  }
  if (!styles->styles().empty()) LogInfo(absl::StrCat("prompt styles: ", styles->styles().size(), " loaded"));
  server::GenerationRunner runner(models, *plugins, **tokenizer);
  runner.set_styles(&*styles);
  request_limits.max_plugin_args_bytes = std::int64_t{max_plugin_args_kb} * 1024;
  runner.set_limits(request_limits);
  server::DaemonServerOptions options;
  options.listen = listen;
  options.max_queue = max_queue;
  options.max_message_bytes = max_message_mb * 1024 * 1024;
  options.outputs = outputs.get();
  options.security = *security;
  options.instance_name = instance_name;
  options.max_concurrent_streams = grpc_bounds.max_concurrent_streams;
  options.grpc_memory_bytes = std::int64_t{grpc_memory_mb} << 20;
  if (quota_jobs > 0) options.client_limits.jobs = quota_jobs;
  if (quota_queued > 0) options.client_limits.queued = quota_queued;
  if (quota_work_per_job > 0) options.client_limits.work_per_job = quota_work_per_job;
  if (quota_work_per_minute > 0) options.client_limits.work_per_minute = quota_work_per_minute;
  // A runaway job must not hold the one worker forever (one SD1.5 512x512 20-step job is about a minute on a CPU
  // with 2 cores, seconds on a GPU).
  options.max_job_seconds = max_job_seconds >= 0 ? max_job_seconds : runtime->device == "cpu" ? 3600.0 : 600.0;
  server::DaemonFacts facts;
  facts.version = kAtelierVersion;
  facts.styles = &*styles;
  facts.runtime = *runtime;
  facts.compute_dtype = *resolved_dtype;
  facts.cpu_features = engine::CpuFeatureList(cpu);
  facts.started_at = absl::Now();
  facts.request_limits = request_limits;
  auto server = server::DaemonServer::Start(options, runner, *plugins, models, facts);
  if (!server.ok()) {
    LogError(std::string(server.status().message()));
    return 1;
  }
  LogInfo(absl::StrCat("security: ", security->summary));
  std::unique_ptr<server::MetricsEndpoint> metrics;
  if (!metrics_listen.empty()) {
    server::DaemonServer* daemon = server->get();
    auto started = server::MetricsEndpoint::Start(metrics_listen, [daemon] { return daemon->MetricsText(); });
    if (!started.ok()) {
      LogError(std::string(started.status().message()));
      return 2;
    }
    metrics = *std::move(started);
    LogInfo(absl::StrCat("metrics on http://", metrics_listen.substr(0, metrics_listen.rfind(':')), ":",
                         metrics->port(), "/metrics"));
  }
  // A plugin that crashes is named in the log before the process dies; one that hangs fails its job, then the
  // daemon exits for its supervisor (examples/systemd) to restart it: the stuck thread cannot be stopped.
  host::InstallPluginCrashReporter();
  server::DaemonServer* serving = server->get();
  host::StartHookWatchdog(plugin_hook_timeout, [serving, plugin_hook_timeout](const host::HookTimeout& t) {
    const std::string what = absl::StrCat("plugin '", t.plugin, "' did not return from its '", t.hook, "' hook in ",
                                          plugin_hook_timeout, " s (--plugin-hook-timeout)");
    LogError(absl::StrCat(what, ": failing its job and exiting for the supervisor to restart the daemon"));
    serving->AbandonForRestart(absl::DeadlineExceededError(absl::StrCat(what, "; the daemon is restarting")),
                               absl::StrCat("the daemon is restarting (", what, "); the job was not started: retry it"));
    std::this_thread::sleep_for(std::chrono::seconds(2));  // the streams deliver their final status
    std::_Exit(70);
  });
  std::optional<WebGatewayChild> web;
  if (!http_listen.empty()) {
    auto started = WebGatewayChild::Start(http_listen, (*server)->address());
    if (!started.ok()) {
      LogError(std::string(started.status().message()));
      return 2;
    }
    web.emplace(*std::move(started));
    LogInfo(absl::StrCat("WebUI's HTTP API and the live page: atelier-web (pid ", web->pid(), ") on ", http_listen));
  }
  // The one line on stdout: scripts and tests read the real port from it.
  std::printf("atelierd listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);
  LogInfo(absl::StrCat("serving on ", (*server)->address(), " (plugin ABI ", ATELIER_PLUGIN_ABI_MAJOR, ".",
                       ATELIER_PLUGIN_ABI_MINOR, ", max queue ", max_queue, ")"));

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LogInfo(absl::StrCat("received ", strsignal(signal_number), ": draining (a second signal exits at once)"));
  std::thread([stop_signals] {
    int again = 0;
    sigwait(&stop_signals, &again);
    LogError("second signal: exiting without draining");
    std::_Exit(130);
  }).detach();
  (*server)->Shutdown();  // drains: the gateway's HTTP jobs in flight finish first
  web.reset();
  metrics.reset();
  server->reset();
  plugins.reset();  // finalizes plugins (joining their threads) before exit
  LogInfo("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
