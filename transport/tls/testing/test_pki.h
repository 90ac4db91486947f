// TestPki: throw-away certificates for tests: a CA (P-256, self-signed) and certificates it
// issues for named daemons, written as PEM files under a directory.
#ifndef MIGMOVER_TRANSPORT_TLS_TESTING_TEST_PKI_H_
#define MIGMOVER_TRANSPORT_TLS_TESTING_TEST_PKI_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/tls/tls_context.h"

namespace migmover::tls::testing {

class TestPki {
 public:
  // A new CA named `ca_name`; its certificate is `dir`/`file_prefix`ca.pem.
  static absl::StatusOr<std::unique_ptr<TestPki>> Create(const std::string& dir,
                                                         const std::string& ca_name,
                                                         const std::string& file_prefix = "");
  ~TestPki();

  // A certificate for `name` (common name and DNS subjectAltName), valid now, signed by this
  // CA, with its key; returns the TlsConfig that presents it and trusts this CA, accepting
  // peers named in `peer_names` (empty: any this CA signed).
  absl::StatusOr<TlsConfig> Issue(const std::string& name,
                                  const std::vector<std::string>& peer_names = {});

  const std::string& ca_file() const { return ca_file_; }

 private:
  TestPki() = default;
  std::string dir_, prefix_, ca_file_;
  void* ca_key_ = nullptr;   // EVP_PKEY*
  void* ca_cert_ = nullptr;  // X509*
};

}  // namespace migmover::tls::testing

#endif  // MIGMOVER_TRANSPORT_TLS_TESTING_TEST_PKI_H_
