#include "cache_service/daemon_config.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwarden {
namespace {

using ::testing::HasSubstr;

constexpr const char* kValid = R"pb(
  admin_token: "adm"
  pools {
    name: "p"
    layout { num_layers: 2 num_kv_heads: 2 head_dim: 4 dtype: DTYPE_FP16 page_tokens: 4 }
    capacity_pages: 64
    chunk_bytes: 1024
  }
  tenants { name: "a" token: "ta" quota_pages: 10 }
)pb";

TEST(DaemonConfigTest, ShippedExampleIsValid) {
  auto s = LoadDaemonConfig(std::string(KVW_SOURCE_DIR) + "/deploy/config/example.textproto");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->pools.size(), 1u);
  EXPECT_EQ(s->pools[0].layout.page_bytes(), 16384u);
  EXPECT_EQ(s->pools[0].chunk_pages, 256u);
  EXPECT_EQ(s->pools[0].num_chunks, 64u);
  EXPECT_EQ(s->tenants.size(), 2u);
  EXPECT_EQ(s->pools[0].high_water_percent, 90u);
  ASSERT_EQ(s->tenant_defaults.size(), 2u);
  EXPECT_EQ(s->tenant_defaults[1].policy_by_pool[0].Summary(), "streaming B=512 sinks=4");
}

TEST(DaemonConfigTest, DefaultsAreFilledIn) {
  auto s = ParseDaemonConfig(kValid, "c.textproto");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->listen, "127.0.0.1:50051");
  EXPECT_EQ(s->pools[0].device, "cpu");
  EXPECT_EQ(s->pools[0].chunk_pages, 8u);  // 1024 bytes / 128-byte pages
  EXPECT_EQ(s->pools[0].num_chunks, 8u);
  EXPECT_EQ(s->tenants[0].weight, 1u);
  EXPECT_EQ(s->leases.default_ttl, absl::Seconds(10));
  EXPECT_EQ(s->max_grpc_connections, 4096u);
  EXPECT_EQ(s->max_grpc_connections_per_peer, 1024u);
  EXPECT_EQ(s->grpc_preface_timeout, absl::Seconds(5));
}

TEST(DaemonConfigTest, GrpcConnectionLimitsAreRead) {
  auto s =
      ParseDaemonConfig(std::string(kValid) +
                            "grpc_connections { max_connections: 100 max_connections_per_peer: 10 "
                            "preface_timeout_ms: 250 }",
                        "c.textproto");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->max_grpc_connections, 100u);
  EXPECT_EQ(s->max_grpc_connections_per_peer, 10u);
  EXPECT_EQ(s->grpc_preface_timeout, absl::Milliseconds(250));
}

struct BadCase {
  std::string edit;  // appended to kValid (later scalar fields win in text format)
  std::string message;
};

class BadConfigTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfigTest, NamesFileFieldAndReason) {
  auto s = ParseDaemonConfig(std::string(kValid) + GetParam().edit, "c.textproto");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(GetParam().message));
  EXPECT_EQ(std::string(s.status().message()).find('\n'), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    All, BadConfigTest,
    ::testing::Values(
        BadCase{"bogus: 1",
                "c.textproto:10:6: Message type \"kvwarden.v1.DaemonConfig\" has no field named "
                "\"bogus\""},
        BadCase{"pools { name: \"q\" }", "pools[1].layout: is required"},
        BadCase{"pools { name: \"p\" layout { num_layers: 1 num_kv_heads: 1 head_dim: 1 dtype: "
                "DTYPE_FP32 page_tokens: 1 } capacity_pages: 8 chunk_bytes: 8 }",
                "pools[1].name: duplicate pool name 'p'"},
        BadCase{"pools { name: \"q\" layout { num_layers: 1 num_kv_heads: 0 head_dim: 1 dtype: "
                "DTYPE_FP32 page_tokens: 1 } capacity_pages: 8 }",
                "pools[1].layout.num_kv_heads: must be in [1, 1024], got 0"},
        BadCase{"pools { name: \"q\" layout { num_layers: 1 num_kv_heads: 1 head_dim: 1 "
                "page_tokens: 1 } capacity_pages: 8 }",
                "pools[1].layout.dtype: must be DTYPE_FP16, DTYPE_BF16 or DTYPE_FP32"},
        BadCase{"pools { name: \"q\" device: \"gpu0\" }",
                "pools[1].device: 'gpu0' is not 'cpu' or 'cuda:N'"},
        BadCase{"pools { name: \"q\" device: \"cuda:x\" }",
                "pools[1].device: 'cuda:x' is not 'cpu' or 'cuda:N'"},
        BadCase{"pools { name: \"q\" layout { num_layers: 1 num_kv_heads: 1 head_dim: 1 dtype: "
                "DTYPE_FP32 page_tokens: 1 } }",
                "pools[1].capacity_bytes: set exactly one of capacity_bytes and capacity_pages"},
        BadCase{"pools { name: \"q\" layout { num_layers: 1 num_kv_heads: 1 head_dim: 1 dtype: "
                "DTYPE_FP32 page_tokens: 1 } capacity_pages: 8 chunk_bytes: 4 }",
                "pools[1].chunk_bytes: 4 is smaller than one page (8 bytes)"},
        BadCase{"pools { name: \"q\" device: \"cuda:0\" layout { num_layers: 1 num_kv_heads: 1 "
                "head_dim: 1 dtype: DTYPE_FP32 page_tokens: 1 } capacity_pages: 8192 chunk_bytes: "
                "32768 }",
                "pools[1].chunk_bytes: 32768: a cuda pool's chunks must be a multiple of 2 MiB "
                "(2097152) so that no two share a CUDA allocation block"},
        BadCase{"data_plane { ucx_transports: \"tcp\" }",
                "data_plane.ucx_transports: 'tcp' is refused: the daemon's UCX runs only posix "
                "shared memory (and self), which admits only its own user; over other transports "
                "UCX lets a peer read and write any of its memory. Network workers use the TCP "
                "data path (data_plane.tcp_listen)"},
        BadCase{"data_plane { tcp_listen: \"nocolon\" }",
                "data_plane.tcp_listen: 'nocolon' is not HOST:PORT"},
        BadCase{"grpc_connections { auth_timeout_ms: 10 }",
                "grpc_connections.auth_timeout_ms: at least 1000 (1 second)"},
        BadCase{"grpc_connections { idle_timeout_ms: 10 }",
                "grpc_connections.idle_timeout_ms: at least 1000 (1 second)"},
        BadCase{"pools { name: \"q\" layout { num_layers: 1 num_kv_heads: 1 head_dim: 1 dtype: "
                "DTYPE_FP32 page_tokens: 1 } capacity_pages: 2 chunk_bytes: 800 }",
                "pools[1].capacity_pages: 2 pages is less than one chunk (100 pages of 8 bytes)"},
        BadCase{"tenants { name: \"a\" token: \"x\" quota_pages: 1 }",
                "tenants[1].name: duplicate tenant name 'a'"},
        BadCase{"tenants { name: \"b\" token: \"adm\" quota_pages: 1 }",
                "tenants[1].token: must differ"},
        BadCase{"tenants { name: \"b\" token: \"tb\" }",
                "tenants[1].quota_bytes: set quota_bytes or quota_pages"},
        BadCase{"tenants { name: \"b c\" token: \"tb\" quota_pages: 1 }",
                "tenants[1].name: must be 1-64 characters"},
        BadCase{"leases { min_ttl_ms: 5000 max_ttl_ms: 1000 }",
                "leases.min_ttl_ms: must not exceed max_ttl_ms"},
        BadCase{"leases { default_ttl_ms: 50 }",
                "leases.default_ttl_ms: 50 is outside [min_ttl_ms 100"},
        BadCase{"listen: \"nohostport\"", "listen: 'nohostport' is not HOST:PORT"},
        BadCase{"tenants { name: \"b\" token: \"tb\" quota_pages: 1 default_policy { windowkv { "
                "mean_budget: 64 gamma: 3 } } }",
                "tenants[1].default_policy.windowkv.gamma: 3 does not divide the layer count 2 "
                "(for pool 'p')"},
        BadCase{"pools { name: \"q\" layout { num_layers: 1 num_kv_heads: 1 head_dim: 1 dtype: "
                "DTYPE_FP32 page_tokens: 1 } capacity_pages: 8 chunk_bytes: 8 high_water_percent: "
                "101 }",
                "pools[1].high_water_percent: 101 is above 100"},
        BadCase{"grpc_connections { preface_timeout_ms: 600001 }",
                "grpc_connections.preface_timeout_ms: at most 600000"}),
    [](const ::testing::TestParamInfo<BadCase>& info) {
      return "case" + std::to_string(info.index);
    });

TEST(DaemonConfigTest, AdminTokenIsRequired) {
  std::string text = kValid;
  text.replace(text.find("admin_token: \"adm\""), 18, "");
  auto s = ParseDaemonConfig(text, "c.textproto");
  EXPECT_EQ(s.status().message(), "c.textproto: admin_token: is required");
}

// The Secret shipped in deploy/ holds "change-me-..." tokens: a daemon never runs on them.
TEST(DaemonConfigTest, PlaceholderTokensAreRefused) {
  std::string text = kValid;
  text.replace(text.find("admin_token: \"adm\""), 18, "admin_token: \"change-me-admin-token\"");
  EXPECT_THAT(ParseDaemonConfig(text, "c.textproto").status().message(),
              HasSubstr("admin_token: is a 'change-me' placeholder"));
  text = kValid;
  text.replace(text.find("token: \"ta\""), 11, "token: \"Change-Me-alpha\"");
  EXPECT_THAT(ParseDaemonConfig(text, "c.textproto").status().message(),
              HasSubstr("tenants[0].token: is a 'change-me' placeholder"));
  EXPECT_FALSE(IsPlaceholderToken("alpha-change-me"));
}

TEST(DaemonConfigTest, TokensComeFromFilesBesideTheConfig) {
  char dir_template[] = "/tmp/kvw-cfg-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
  };
  write("admin", "  secret-admin\n");
  write("alpha", "secret-alpha\n");
  std::string text = kValid;
  text.replace(text.find("admin_token: \"adm\""), 18, "admin_token_file: \"admin\"");
  text.replace(text.find("token: \"ta\""), 11, "token_file: \"" + dir + "/alpha\"");
  write("c.textproto", text);
  auto s = LoadDaemonConfig(dir + "/c.textproto");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->admin_token, "secret-admin");
  EXPECT_EQ(s->tenant_tokens[0].token, "secret-alpha");
  // Missing, empty, or both ways at once: the field and the reason.
  write("empty", "\n");
  write("c2.textproto", std::string(kValid) + "admin_token_file: \"empty\"");
  EXPECT_THAT(LoadDaemonConfig(dir + "/c2.textproto").status().message(),
              HasSubstr("admin_token_file: set admin_token or admin_token_file, not both"));
  std::string missing = kValid;
  missing.replace(missing.find("token: \"ta\""), 11, "token_file: \"nope\"");
  write("c3.textproto", missing);
  EXPECT_THAT(
      LoadDaemonConfig(dir + "/c3.textproto").status().message(),
      HasSubstr("tenants[0].token_file: " + dir + "/nope: cannot read: No such file or directory"));
  // The reason, always: a missing config, and one that is not a file.
  EXPECT_THAT(LoadDaemonConfig(dir + "/absent.textproto").status().message(),
              HasSubstr("absent.textproto: cannot open config file: No such file or directory"));
  EXPECT_THAT(LoadDaemonConfig(dir).status().message(), HasSubstr(": cannot open config file: "));
  std::string empty = kValid;
  empty.replace(empty.find("token: \"ta\""), 11, "token_file: \"empty\"");
  write("c4.textproto", empty);
  EXPECT_THAT(LoadDaemonConfig(dir + "/c4.textproto").status().message(),
              HasSubstr("empty is empty"));
  std::filesystem::remove_all(dir);
}

TEST(DaemonConfigTest, MissingFile) {
  auto s = LoadDaemonConfig("/nonexistent/kvw.textproto");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr("/nonexistent/kvw.textproto: cannot open"));
}

}  // namespace
}  // namespace kvwarden
