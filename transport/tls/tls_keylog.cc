#include "transport/tls/tls_keylog.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace migmover::tls {

TrafficSecrets::~TrafficSecrets() {
  OPENSSL_cleanse(client.data(), client.size());
  OPENSSL_cleanse(server.data(), server.size());
}

int TrafficSecretsIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

void RecordTrafficSecret(const SSL* ssl, const char* line) {
  auto* secrets = static_cast<TrafficSecrets*>(SSL_get_ex_data(ssl, TrafficSecretsIndex()));
  if (secrets == nullptr) return;
  // "<LABEL> <client random, hex> <secret, hex>"
  std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
  if (parts.size() != 3) return;
  std::string* to = parts[0] == "CLIENT_TRAFFIC_SECRET_0"   ? &secrets->client
                    : parts[0] == "SERVER_TRAFFIC_SECRET_0" ? &secrets->server
                                                            : nullptr;
  if (to == nullptr) return;
  OPENSSL_cleanse(to->data(), to->size());
  *to = absl::HexStringToBytes(parts[2]);
}

}  // namespace migmover::tls
