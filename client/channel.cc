#include "channel.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kvwarden {
namespace client {

std::shared_ptr<grpc::Channel> NewChannel(const Options& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  // The daemon is local or one hop away: after it restarts, reconnect within ~2 s
  // rather than gRPC's default backoff of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_pem.empty()) {
    creds = grpc::SslCredentials({options.tls_ca_pem, options.tls_key_pem, options.tls_cert_pem});
    if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  }
  return grpc::CreateCustomChannel(options.target, creds, args);
}

std::unique_ptr<grpc::ClientContext> NewContext(const Options& options) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!options.token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", options.token));
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  return ctx;
}

}  // namespace client
}  // namespace kvwarden
