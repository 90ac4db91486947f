#include "transport/dpdk/frame_seal.h"

#include <openssl/evp.h>

#include <array>
#include <climits>

#include "absl/status/status.h"

namespace migmover::dpdk {
namespace {

using Nonce = std::array<uint8_t, 12>;

Nonce NonceOf(uint8_t type, uint64_t number) {
  Nonce n{};
  n[0] = type;
  for (int i = 0; i < 8; ++i) n[4 + i] = static_cast<uint8_t>(number >> (8 * i));
  return n;
}

EVP_CIPHER_CTX* Keyed(const peer::LinkKey& key, bool encrypt) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) return nullptr;
  if (EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), nullptr, key.bytes.data(), nullptr,
                        encrypt ? 1 : 0) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FrameSeal>> FrameSeal::Create(const peer::LinkKey& send,
                                                             const peer::LinkKey& receive) {
  std::unique_ptr<FrameSeal> s(new FrameSeal());
  s->seal_ = Keyed(send, true);
  s->open_ = Keyed(receive, false);
  if (s->seal_ == nullptr || s->open_ == nullptr) {
    return absl::InternalError("EVP_CipherInit_ex(ChaCha20-Poly1305) failed");
  }
  return s;
}

FrameSeal::~FrameSeal() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(seal_));
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(open_));
}

bool FrameSeal::Seal(uint8_t type, uint64_t number, const uint8_t* header, size_t header_size,
                     uint8_t* payload, size_t n, uint8_t* tag) {
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(seal_);
  const Nonce nonce = NonceOf(type, number);
  int len = 0;
  if (n > INT_MAX || header_size > INT_MAX) return false;
  // Only the nonce changes between frames: the key schedule stays.
  return EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) == 1 &&
         EVP_EncryptUpdate(ctx, nullptr, &len, header, static_cast<int>(header_size)) == 1 &&
         (n == 0 || EVP_EncryptUpdate(ctx, payload, &len, payload, static_cast<int>(n)) == 1) &&
         EVP_EncryptFinal_ex(ctx, payload + n, &len) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, kFrameTagSize, tag) == 1;
}

bool FrameSeal::Open(uint8_t type, uint64_t number, const uint8_t* header, size_t header_size,
                     uint8_t* payload, size_t n, const uint8_t* tag) {
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(open_);
  const Nonce nonce = NonceOf(type, number);
  int len = 0;
  if (n > INT_MAX || header_size > INT_MAX) return false;
  return EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) == 1 &&
         EVP_DecryptUpdate(ctx, nullptr, &len, header, static_cast<int>(header_size)) == 1 &&
         (n == 0 || EVP_DecryptUpdate(ctx, payload, &len, payload, static_cast<int>(n)) == 1) &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, kFrameTagSize,
                             const_cast<uint8_t*>(tag)) == 1 &&
         // The tag is checked here, in constant time.
         EVP_DecryptFinal_ex(ctx, payload + n, &len) == 1;
}

}  // namespace migmover::dpdk
