#pragma once

#include "cache_service/core/retention_strategy.h"

namespace kvwarden {

// full, streaming, scissorhands and windowkv: what the daemon gives its SequenceTable.
const RetentionStrategies& DefaultRetentionStrategies();

}  // namespace kvwarden
