#pragma once

#include "cache_service/core/memory/page_pool.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "kvwarden/v1/admin.pb.h"
#include "kvwarden/v1/control.pb.h"

namespace kvwarden {

void ToProto(const KvLayout& in, v1::KvLayout* out);
void ToProto(const SequenceInfo& in, const TenantLedger& ledger, v1::SequenceInfo* out);
void ToProto(const PagePool& pool, const TenantLedger& ledger, v1::PoolStats* out);
// A StatsMessage as SequenceTable::ApplyStats takes it (ApplyStats validates it).
StatsBatch FromProto(const v1::StatsMessage& in);
void ToProto(const RetentionResult& in, SequenceId id, v1::RetentionUpdate* out);
void ToProto(const HeadRetention& in, v1::HeadRetention* out);

}  // namespace kvwarden
