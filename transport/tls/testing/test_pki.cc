#include "transport/tls/testing/test_pki.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace migmover::tls::testing {
namespace {

EVP_PKEY* NewKey() { return EVP_EC_gen("P-256"); }

absl::Status AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return absl::InternalError(absl::StrCat("extension ", value));
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? absl::OkStatus() : absl::InternalError("X509_add_ext");
}

absl::StatusOr<X509*> NewCert(const std::string& cn, EVP_PKEY* key, X509* issuer,
                              EVP_PKEY* issuer_key, bool ca, long serial) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 7 * 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer != nullptr ? issuer : cert;
  absl::Status s = ca ? AddExt(cert, signer, NID_basic_constraints, "critical,CA:TRUE")
                      : AddExt(cert, signer, NID_subject_alt_name, ("DNS:" + cn).c_str());
  if (s.ok() && ca) s = AddExt(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  if (s.ok()) s = AddExt(cert, signer, NID_subject_key_identifier, "hash");
  if (!s.ok() || X509_sign(cert, issuer_key, EVP_sha256()) == 0) {
    X509_free(cert);
    return s.ok() ? absl::InternalError("X509_sign") : s;
  }
  return cert;
}

absl::Status WritePem(const std::string& path, X509* cert, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat("fopen ", path));
  const bool ok = cert != nullptr ? PEM_write_X509(f, cert) == 1
                                  : PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr,
                                                         nullptr) == 1;
  std::fclose(f);
  return ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("PEM write ", path));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestPki>> TestPki::Create(const std::string& dir,
                                                         const std::string& ca_name,
                                                         const std::string& file_prefix) {
  std::unique_ptr<TestPki> p(new TestPki());
  p->dir_ = dir;
  p->prefix_ = file_prefix;
  EVP_PKEY* key = NewKey();
  if (key == nullptr) return absl::InternalError("EVP_EC_gen");
  p->ca_key_ = key;
  auto cert = NewCert(ca_name, key, nullptr, key, /*ca=*/true, 1);
  if (!cert.ok()) return cert.status();
  p->ca_cert_ = *cert;
  p->ca_file_ = absl::StrCat(dir, "/", file_prefix, "ca.pem");
  if (absl::Status s = WritePem(p->ca_file_, *cert, nullptr); !s.ok()) return s;
  return p;
}

TestPki::~TestPki() {
  X509_free(static_cast<X509*>(ca_cert_));
  EVP_PKEY_free(static_cast<EVP_PKEY*>(ca_key_));
}

absl::StatusOr<TlsConfig> TestPki::Issue(const std::string& name,
                                         const std::vector<std::string>& peer_names) {
  static std::atomic<long> serial{100};
  EVP_PKEY* key = NewKey();
  if (key == nullptr) return absl::InternalError("EVP_EC_gen");
  auto cert = NewCert(name, key, static_cast<X509*>(ca_cert_), static_cast<EVP_PKEY*>(ca_key_),
                      /*ca=*/false, ++serial);
  if (!cert.ok()) {
    EVP_PKEY_free(key);
    return cert.status();
  }
  TlsConfig c;
  c.ca_file = ca_file_;
  c.cert_file = absl::StrCat(dir_, "/", prefix_, name, ".pem");
  c.key_file = absl::StrCat(dir_, "/", prefix_, name, ".key");
  c.peer_names = peer_names;
  absl::Status s = WritePem(c.cert_file, *cert, nullptr);
  if (s.ok()) s = WritePem(c.key_file, nullptr, key);
  X509_free(*cert);
  EVP_PKEY_free(key);
  if (!s.ok()) return s;
  return c;
}

}  // namespace migmover::tls::testing
