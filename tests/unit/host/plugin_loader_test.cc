// The plugin loader through the real dlopen path: the template plugin loads; every broken plugin is refused with a
// reason naming what is wrong; struct sizes are honoured in both directions.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "engine/engine_abi.h"
#include "host/plugin_registry.h"
#include "test_support.h"

namespace atelier {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::BuiltPlugin;
using testing::CopyPlugin;
using testing::TempDir;
using testing::TestPlugin;

std::unique_ptr<host::PluginRegistry> LoadOnly(const TempDir& dir, std::uint64_t host_api_size = sizeof(atelier_host_api)) {
  host::PluginLoaderOptions options;
  options.environment.host_version = "test";
  options.environment.device = "cpu";
  options.host_api_size = host_api_size;
  return host::PluginRegistry::LoadDirectory(dir.path(), std::move(options));
}

TEST(PluginLoaderTest, LoadsTheTemplatePlugin) {
  TempDir dir;
  CopyPlugin(BuiltPlugin("invert"), dir.path(), "invert.so");
  auto registry = LoadOnly(dir);
  ASSERT_EQ(registry->plugins().size(), 1u);
  EXPECT_TRUE(registry->refused().empty());
  const host::Plugin& plugin = *registry->plugins()[0];
  EXPECT_EQ(plugin.name(), "invert");
  EXPECT_EQ(plugin.version(), "1.1.0");
  EXPECT_EQ(plugin.abi_major(), static_cast<std::uint32_t>(ATELIER_PLUGIN_ABI_MAJOR));
  EXPECT_EQ(plugin.abi_minor(), static_cast<std::uint32_t>(ATELIER_PLUGIN_ABI_MINOR));
  EXPECT_EQ(plugin.file(), "invert.so");
  EXPECT_THAT(plugin.HookNames(), ElementsAre("process", "frame"));
  EXPECT_THAT(plugin.params_schema_json(), HasSubstr("strength"));
  // alwayson_scripts keys match case-insensitively, as in WebUI.
  EXPECT_EQ(registry->Find("INVERT"), &plugin);
  EXPECT_EQ(registry->Find("nope"), nullptr);
}

struct RefusalCase {
  std::string plugin;
  std::string reason;  // a substring the refusal must contain
};

// Names the case in test listings instead of dumping its bytes.
void PrintTo(const RefusalCase& c, std::ostream* os) { *os << c.plugin; }

class PluginRefusalTest : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(PluginRefusalTest, RefusesWithAReason) {
  TempDir dir;
  CopyPlugin(TestPlugin(GetParam().plugin), dir.path(), GetParam().plugin + ".so");
  auto registry = LoadOnly(dir);
  EXPECT_TRUE(registry->plugins().empty());
  ASSERT_EQ(registry->refused().size(), 1u);
  EXPECT_EQ(registry->refused()[0].file, GetParam().plugin + ".so");
  EXPECT_THAT(registry->refused()[0].reason, HasSubstr(GetParam().reason));
}

INSTANTIATE_TEST_SUITE_P(
    EveryRefusal, PluginRefusalTest,
    ::testing::Values(RefusalCase{"no_entry", "missing entry symbol 'atelier_plugin_entry'"},
                      RefusalCase{"entry_returns_null", "declined this daemon"},
                      RefusalCase{"abi_major", "built for plugin ABI 2." + std::to_string(ATELIER_PLUGIN_ABI_MINOR) + "; this daemon supports ABI 1.x"},
                      RefusalCase{"abi_minor_newer", "newer than this daemon's 1." + std::to_string(ATELIER_PLUGIN_ABI_MINOR)},
                      RefusalCase{"init_fails", "failed in init: license file probe.lic is missing"},
                      RefusalCase{"descriptor_too_large", "is larger than ABI 1." + std::to_string(ATELIER_PLUGIN_ABI_MINOR) + " allows"},
                      RefusalCase{"descriptor_too_small", "is below the ABI 1." + std::to_string(ATELIER_PLUGIN_ABI_MINOR) + " minimum"},
                      RefusalCase{"bad_name", "invalid plugin name 'bad name!'"},
                      RefusalCase{"process_without_job_end", "has a process hook but no job_end"},
                      RefusalCase{"engine_abi_mismatch",
                                  "was built against engine ABI 'atelier-engine 0.0.1; libtorch 9.9.9; cxx11-abi 0'; "
                                  "this daemon's is '" + std::string(atelier::engine::EngineAbi()) + "'"}),
    [](const auto& info) { return info.param.plugin; });

TEST(PluginLoaderTest, RefusesAFileThatIsNotASharedLibrary) {
  TempDir dir;
  std::ofstream(dir.path() / "garbage.so") << "this is not an ELF file";
  auto registry = LoadOnly(dir);
  ASSERT_EQ(registry->refused().size(), 1u);
  EXPECT_THAT(registry->refused()[0].reason, HasSubstr("cannot load the shared library"));
}

TEST(PluginLoaderTest, RefusesASecondPluginWithTheSameName) {
  TempDir dir;
  CopyPlugin(BuiltPlugin("invert"), dir.path(), "a_invert.so");
  CopyPlugin(BuiltPlugin("invert"), dir.path(), "b_invert.so");
  auto registry = LoadOnly(dir);
  ASSERT_EQ(registry->plugins().size(), 1u);
  EXPECT_EQ(registry->plugins()[0]->file(), "a_invert.so");
  ASSERT_EQ(registry->refused().size(), 1u);
  EXPECT_EQ(registry->refused()[0].file, "b_invert.so");
  EXPECT_THAT(registry->refused()[0].reason, HasSubstr("already loaded from a_invert.so"));
}

TEST(PluginLoaderTest, GoodAndBrokenPluginsSideBySide) {
  TempDir dir;
  CopyPlugin(BuiltPlugin("invert"), dir.path(), "invert.so");
  CopyPlugin(TestPlugin("abi_major"), dir.path(), "abi_major.so");
  CopyPlugin(TestPlugin("init_fails"), dir.path(), "init_fails.so");
  std::ofstream(dir.path() / "README.txt") << "not a plugin, ignored";
  auto registry = LoadOnly(dir);
  ASSERT_EQ(registry->plugins().size(), 1u);
  EXPECT_EQ(registry->plugins()[0]->name(), "invert");
  EXPECT_EQ(registry->refused().size(), 2u);
  EXPECT_EQ(registry->NameList(), "invert");
}

TEST(PluginLoaderTest, MissingDirectoryLoadsNothing) {
  host::PluginLoaderOptions options;
  auto registry = host::PluginRegistry::LoadDirectory("/nonexistent/atelier/plugins", std::move(options));
  EXPECT_TRUE(registry->plugins().empty());
  EXPECT_TRUE(registry->refused().empty());
  EXPECT_EQ(registry->NameList(), "none");
}

// An older plugin (smaller descriptor) loads; the host zero-fills what it did not declare, so the garbage the test
// plugin placed past its struct_size never becomes a hook.
TEST(PluginStructSizeTest, SmallerDescriptorLoadsWithOnlyItsHooks) {
  TempDir dir;
  CopyPlugin(TestPlugin("old_small_descriptor"), dir.path(), "old.so");
  auto registry = LoadOnly(dir);
  ASSERT_EQ(registry->plugins().size(), 1u) << (registry->refused().empty() ? "" : registry->refused()[0].reason);
  const host::Plugin& plugin = *registry->plugins()[0];
  EXPECT_THAT(plugin.HookNames(), ElementsAre("model_loaded"));
  EXPECT_EQ(plugin.descriptor().process, nullptr);
  EXPECT_EQ(plugin.descriptor().job_end, nullptr);
  EXPECT_EQ(plugin.descriptor().postprocess_frames, nullptr);
  EXPECT_EQ(plugin.descriptor().export_media, nullptr);
}

// A newer plugin reading the host's function table checks struct_size before using a field; against an older host
// (a smaller table) it declines cleanly.
TEST(PluginStructSizeTest, PluginChecksTheHostTableSize) {
  {
    TempDir dir;
    CopyPlugin(TestPlugin("host_api_probe"), dir.path(), "probe.so");
    auto registry = LoadOnly(dir);
    EXPECT_EQ(registry->plugins().size(), 1u);
  }
  {
    TempDir dir;
    CopyPlugin(TestPlugin("host_api_probe"), dir.path(), "probe.so");
    auto registry = LoadOnly(dir, offsetof(atelier_host_api, tensor_file_close));
    EXPECT_TRUE(registry->plugins().empty());
    ASSERT_EQ(registry->refused().size(), 1u);
    EXPECT_THAT(registry->refused()[0].reason, HasSubstr("host function table too old"));
    EXPECT_THAT(registry->refused()[0].reason,
                HasSubstr("struct_size " + std::to_string(offsetof(atelier_host_api, tensor_file_close))));
  }
}

TEST(PluginStructSizeTest, HasFieldMacroFollowsStructSize) {
  atelier_host_api api{};
  api.struct_size = offsetof(atelier_host_api, emit_frame);
  EXPECT_TRUE(ATELIER_HAS_FIELD(&api, atelier_host_api, report_progress));
  EXPECT_FALSE(ATELIER_HAS_FIELD(&api, atelier_host_api, emit_frame));
  api.struct_size = sizeof(atelier_host_api);
  EXPECT_TRUE(ATELIER_HAS_FIELD(&api, atelier_host_api, tensor_file_close));
  const atelier_host_api* none = nullptr;
  EXPECT_FALSE(ATELIER_HAS_FIELD(none, atelier_host_api, log));
}

}  // namespace
}  // namespace atelier
