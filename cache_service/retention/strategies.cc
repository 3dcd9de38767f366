#include "cache_service/retention/strategies.h"

#include "cache_service/retention/full_strategy.h"
#include "cache_service/retention/scissorhands_strategy.h"
#include "cache_service/retention/streaming_strategy.h"
#include "cache_service/retention/windowkv_strategy.h"

namespace kvwarden {
namespace {

class DefaultStrategies final : public RetentionStrategies {
 public:
  const RetentionStrategy& For(PolicyKind kind) const override {
    switch (kind) {
      case PolicyKind::kStreaming:
        return streaming_;
      case PolicyKind::kScissorhands:
        return scissorhands_;
      case PolicyKind::kWindowKv:
        return windowkv_;
      case PolicyKind::kFull:
        break;
    }
    return full_;
  }

 private:
  FullStrategy full_;
  StreamingStrategy streaming_;
  ScissorhandsStrategy scissorhands_;
  WindowKvStrategy windowkv_;
};

}  // namespace

const RetentionStrategies& DefaultRetentionStrategies() {
  static const DefaultStrategies strategies;
  return strategies;
}

}  // namespace kvwarden
