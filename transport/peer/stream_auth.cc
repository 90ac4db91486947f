#include "transport/peer/stream_auth.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "transport/base/errno_status.h"

namespace migmover::peer {
namespace {

void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The proof's message: fixed-width fields, then the session id (its length first, so no two
// field sets encode alike).
std::string HelloMessage(const HelloFields& f) {
  std::string m = "migmover hello v3";
  PutLe(&m, f.min_version, 2);
  PutLe(&m, f.max_version, 2);
  PutLe(&m, f.device, 4);
  PutLe(&m, f.device_count, 4);
  PutLe(&m, f.stream, 2);
  PutLe(&m, f.stream_count, 2);
  PutLe(&m, f.link, 4);
  m.push_back(f.heartbeat ? 1 : 0);
  PutLe(&m, f.resume, 8);
  m.append(reinterpret_cast<const char*>(f.nonce.data()), f.nonce.size());
  m.append(reinterpret_cast<const char*>(f.binding.data()), f.binding.size());
  PutLe(&m, f.session_id.size(), 4);
  m.append(f.session_id.data(), f.session_id.size());
  return m;
}

// The proof, or false when OpenSSL could not compute it.
bool ComputeProof(const SessionSecretBytes& secret, const HelloFields& fields, HelloProof* out) {
  const std::string m = HelloMessage(fields);
  unsigned int len = 0;
  return HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
              reinterpret_cast<const unsigned char*>(m.data()), m.size(), out->data(),
              &len) != nullptr &&
         len == out->size();
}

}  // namespace

absl::StatusOr<HelloNonce> NewHelloNonce() {
  HelloNonce n;
  size_t got = 0;
  while (got < n.size()) {
    const ssize_t r = ::getrandom(n.data() + got, n.size() - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("getrandom(", n.size() - got, " bytes)"), errno);
    }
    got += static_cast<size_t>(r);
  }
  return n;
}

HelloProof ProveHello(const SessionSecretBytes& secret, const HelloFields& fields) {
  HelloProof proof{};
  if (!ComputeProof(secret, fields, &proof)) proof.fill(0);
  return proof;
}

bool HelloProofValid(const SessionSecretBytes& secret, const HelloFields& fields,
                     const HelloProof& proof) {
  HelloProof expected{};
  if (!ComputeProof(secret, fields, &expected)) return false;
  return CRYPTO_memcmp(expected.data(), proof.data(), proof.size()) == 0;
}

namespace {

// HKDF-SHA256 of the secret into 32 bytes; false when OpenSSL fails.
bool Hkdf(absl::Span<const uint8_t> secret, const HelloNonce& nonce, const std::string& info,
          std::array<uint8_t, 32>* out) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX* ctx = kdf != nullptr ? EVP_KDF_CTX_new(kdf) : nullptr;
  bool derived = false;
  if (ctx != nullptr) {
    char digest[] = "SHA256";
    std::string info_copy = info;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()),
                                          secret.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(nonce.data()),
                                          nonce.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info_copy.data(), info_copy.size()),
        OSSL_PARAM_construct_end()};
    derived = EVP_KDF_derive(ctx, out->data(), out->size(), params) == 1;
  }
  EVP_KDF_CTX_free(ctx);
  EVP_KDF_free(kdf);
  return derived;
}

std::string KeyInfo(absl::string_view label, uint32_t device, absl::string_view session_id) {
  std::string info(label);
  PutLe(&info, device, 4);
  info.append(session_id.data(), session_id.size());
  return info;
}

}  // namespace

absl::StatusOr<StreamKeys> DeriveStreamKeys(const SessionSecretBytes& secret,
                                            const HelloNonce& nonce, absl::string_view session_id,
                                            uint32_t device) {
  StreamKeys keys;
  // A zero key would make every tag zero, which anyone can forge: no keys, no stream.
  if (!Hkdf(secret, nonce, KeyInfo("migmover stream digest v3", device, session_id),
            &keys.digest.bytes) ||
      !Hkdf(secret, nonce, KeyInfo("migmover stream control v3", device, session_id),
            &keys.control.bytes)) {
    return absl::InternalError("HKDF-SHA256 (stream keys) failed");
  }
  return keys;
}

absl::StatusOr<LinkKeys> DeriveLinkKeys(const SessionSecretBytes& secret,
                                        const ChannelBinding& binding, const HelloNonce& nonce,
                                        absl::string_view session_id, uint32_t device) {
  std::array<uint8_t, sizeof(secret) + sizeof(binding)> input;
  std::memcpy(input.data(), secret.data(), secret.size());
  std::memcpy(input.data() + secret.size(), binding.data(), binding.size());
  LinkKeys keys;
  const bool derived =
      Hkdf(input, nonce, KeyInfo("migmover dpdk link to destination v1", device, session_id),
           &keys.to_destination.bytes) &&
      Hkdf(input, nonce, KeyInfo("migmover dpdk link to source v1", device, session_id),
           &keys.to_source.bytes);
  OPENSSL_cleanse(input.data(), input.size());
  if (!derived) return absl::InternalError("HKDF-SHA256 (DPDK link keys) failed");
  return keys;
}

std::optional<StreamTag> ControlTag(const ControlKey& key, absl::string_view header,
                                    absl::string_view payload) {
  std::string m(header);
  m.append(payload.data(), payload.size());
  std::array<uint8_t, 32> full{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.bytes.data(), static_cast<int>(key.bytes.size()),
           reinterpret_cast<const unsigned char*>(m.data()), m.size(), full.data(), &len) ==
          nullptr ||
      len != full.size()) {
    return std::nullopt;
  }
  StreamTag tag;
  std::memcpy(tag.data(), full.data(), tag.size());
  return tag;
}

absl::StatusOr<std::unique_ptr<StreamMac>> StreamMac::Create(const StreamKey& key) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "POLY1305", nullptr);
  if (mac == nullptr) return absl::InternalError("EVP_MAC_fetch(POLY1305): not available");
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  EVP_MAC_free(mac);  // The context holds its own reference.
  if (ctx == nullptr) return absl::InternalError("EVP_MAC_CTX_new(POLY1305) failed");
  if (EVP_MAC_init(ctx, key.bytes.data(), key.bytes.size(), nullptr) != 1) {
    EVP_MAC_CTX_free(ctx);
    return absl::InternalError("EVP_MAC_init(POLY1305) failed");
  }
  std::unique_ptr<StreamMac> m(new StreamMac());
  m->ctx_ = ctx;
  return m;
}

StreamMac::~StreamMac() { EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(ctx_)); }

void StreamMac::Update(const void* data, size_t n) {
  if (finished_ || n == 0) return;
  if (EVP_MAC_update(static_cast<EVP_MAC_CTX*>(ctx_), static_cast<const unsigned char*>(data),
                     n) != 1) {
    failed_ = true;
  }
  bytes_ += n;
}

std::optional<StreamTag> StreamMac::Finish() {
  if (!finished_) {
    size_t len = 0;
    if (EVP_MAC_final(static_cast<EVP_MAC_CTX*>(ctx_), tag_.data(), &len, tag_.size()) != 1 ||
        len != tag_.size()) {
      failed_ = true;
    }
    finished_ = true;
  }
  if (failed_) return std::nullopt;
  return tag_;
}

bool TagsEqual(const StreamTag& a, const StreamTag& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace migmover::peer
