#include "cache_service/retention/registry.h"
#include "cache_service/retention/streaming/streaming_policy.h"
#include "cache_service/retention/windowkv/windowkv_policy.h"

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "kvwarden/v1/policy.pb.h"

namespace kvwarden {
namespace {

using ::testing::HasSubstr;

const KvLayout kLayout{32, 8, 128, DType::kFp16, 16};

absl::StatusOr<RetentionPolicy> Parse(const std::string& text) {
  v1::RetentionPolicy p;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &p)) << text;
  return PolicyFromProto(p, kLayout, "policy");
}

TEST(PolicyConfigTest, DefaultsAreFilledIn) {
  auto full = Parse("");
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->Name(), "full");
  auto sh = Parse("scissorhands { budget: 256 }");
  ASSERT_TRUE(sh.ok()) << sh.status();
  EXPECT_EQ(sh->Summary(), "scissorhands B=256 w=400 r=10 m=128 sinks=0 scale=1");
  EXPECT_EQ(sh->LayerBudget(31, 9999), 256u);
  auto h2o = Parse("h2o { budget: 256 }");
  ASSERT_TRUE(h2o.ok()) << h2o.status();
  EXPECT_EQ(h2o->Summary(), "h2o B=256 r=10 m=128 sinks=0");
  auto st = Parse("streaming { budget: 64 }");
  EXPECT_EQ(st->Params<StreamingPolicyParams>().kernel.sinks, 4u);
  auto w = Parse("windowkv { mean_budget: 2048 }");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->Params<WindowKvPolicyParams>().top_p, 8u);
  EXPECT_THAT(w->Params<WindowKvPolicyParams>().group_budgets, ::testing::ElementsAre(2926, 2341, 1756, 1170));
  auto agg = Parse("windowkv { mean_budget: 512 task: TASK_AGGREGATION omega: 7 }");
  EXPECT_EQ(agg->Params<WindowKvPolicyParams>().top_p, 4u);  // ceil(7 / 2)
}

// gamma > lambda: budgets grow with depth and stay small (they wrapped to ~2^31 before).
TEST(PolicyConfigTest, WindowKvBudgetsGrowingWithDepth) {
  auto w = Parse("windowkv { mean_budget: 100 gamma: 8 lambda: 6 }");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(w->Params<WindowKvPolicyParams>().group_budgets, ::testing::ElementsAre(67, 89, 111, 133));
}

struct Bad {
  std::string text;
  std::string message;
};

class BadPolicyTest : public ::testing::TestWithParam<Bad> {};

TEST_P(BadPolicyTest, IsInvalidArgumentNamingTheField) {
  auto p = Parse(GetParam().text);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    All, BadPolicyTest,
    ::testing::Values(
        Bad{"scissorhands { budget: 10 recent: 10 }", "policy.scissorhands.recent: 10 must be < the budget 10"},
        Bad{"scissorhands { budget: 10 recent: 6 sinks: 4 }", "policy.scissorhands.budget: recent (6) + sinks (4) must be < the budget (10)"},
        Bad{"scissorhands { }", "policy.scissorhands.budget: is required"},
        Bad{"scissorhands { budget: 64 window: 5000 }", "policy.scissorhands.window: 5000 is above 4096"},
        Bad{"scissorhands { budget: 64 drop: 65 }", "policy.scissorhands.drop: 65 is above the budget 64"},
        Bad{"scissorhands { layer_budgets: [1, 2] }", "policy.scissorhands.layer_budgets: has 2 entries, the layout has 32 layers"},
        Bad{"scissorhands { budget: 64 threshold_scale: -1 }", "policy.scissorhands.threshold_scale: must be a finite value > 0"},
        Bad{"scissorhands { budget: 64 threshold_scale: inf }", "policy.scissorhands.threshold_scale: must be a finite value > 0"},
        // recent + sinks wrapped in 32 bits to 10 < 100 and passed: heap corruption later.
        Bad{"scissorhands { budget: 100 sinks: 4294967286 recent: 20 }", "policy.scissorhands.sinks: 4294967286 must be < the budget 100"},
        Bad{"scissorhands { budget: 100 recent: 4294967290 sinks: 20 }", "policy.scissorhands.recent: 4294967290 must be < the budget 100"},
        Bad{"scissorhands { budget: 100 recent: 60 sinks: 50 }", "policy.scissorhands.budget: recent (60) + sinks (50) must be < the budget (100)"},
        Bad{"windowkv { mean_budget: 100 gamma: 8 lambda: 4 }", "policy.windowkv.lambda: mean_budget (100) * gamma (8) / lambda (4) is at least 2 * mean_budget"},
        Bad{"windowkv { mean_budget: 4294967295 }", "policy.windowkv.mean_budget: group 0 gets a budget of 6135667565, not in (alpha 8, 4294967295]"},
        Bad{"streaming { budget: 4 sinks: 4 }", "policy.streaming.sinks: 4 must be < the budget 4"},
        Bad{"streaming { }", "policy.streaming.budget: is required"},
        Bad{"h2o { }", "policy.h2o.budget: is required"},
        Bad{"h2o { budget: 10 recent: 10 }", "policy.h2o.recent: 10 must be < the budget 10"},
        Bad{"h2o { budget: 10 recent: 6 sinks: 4 }", "policy.h2o.budget: recent (6) + sinks (4) must be < the budget (10)"},
        Bad{"h2o { budget: 64 drop: 65 }", "policy.h2o.drop: 65 is above the budget 64"},
        Bad{"h2o { layer_budgets: [1, 2] }", "policy.h2o.layer_budgets: has 2 entries, the layout has 32 layers"},
        Bad{"windowkv { mean_budget: 64 omega: 0 }", "policy.windowkv.omega: 0 is outside [1, 256]"},
        Bad{"windowkv { mean_budget: 64 gamma: 5 }", "policy.windowkv.gamma: 5 does not divide the layer count 32"},
        Bad{"windowkv { mean_budget: 64 task: 7 }", "policy.windowkv.task: unknown task 7"},
        Bad{"windowkv { mean_budget: 64 top_p: 9 }", "policy.windowkv.top_p: 9 is above omega 8"},
        Bad{"windowkv { }", "policy.windowkv.mean_budget: is required"},
        Bad{"windowkv { mean_budget: 10 alpha: 8 }", "policy.windowkv.mean_budget: group 3 gets a budget of 5, not in (alpha 8, 4294967295]"}),
    [](const ::testing::TestParamInfo<Bad>& info) { return "case" + std::to_string(info.index); });

}  // namespace
}  // namespace kvwarden
