#include "transport/tls/kernel_tls.h"

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/tls/tls_context.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

namespace migmover::tls {
namespace {

// HKDF-Expand-Label(secret, label, "", length) with the handshake's hash.
absl::StatusOr<std::string> ExpandLabel(const EVP_MD* md, const std::string& secret,
                                        const std::string& label, size_t length) {
  const std::string full = "tls13 " + label;
  std::string info;
  info.push_back(static_cast<char>(length >> 8));
  info.push_back(static_cast<char>(length & 0xff));
  info.push_back(static_cast<char>(full.size()));
  info += full;
  info.push_back(0);  // Empty context.
  std::string out(length, '\0');
  EVP_PKEY_CTX* k = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  const bool ok =
      k != nullptr && EVP_PKEY_derive_init(k) > 0 &&
      EVP_PKEY_CTX_set_hkdf_mode(k, EVP_PKEY_HKDEF_MODE_EXPAND_ONLY) > 0 &&
      EVP_PKEY_CTX_set_hkdf_md(k, md) > 0 &&
      EVP_PKEY_CTX_set1_hkdf_key(k, reinterpret_cast<const unsigned char*>(secret.data()),
                                 static_cast<int>(secret.size())) > 0 &&
      EVP_PKEY_CTX_add1_hkdf_info(k, reinterpret_cast<const unsigned char*>(info.data()),
                                  static_cast<int>(info.size())) > 0 &&
      EVP_PKEY_derive(k, reinterpret_cast<unsigned char*>(out.data()), &length) > 0;
  EVP_PKEY_CTX_free(k);
  if (!ok) return absl::InternalError("HKDF-Expand-Label: " + DrainOpenSslErrors());
  return out;
}

// The crypto_info of one direction; wiped by the caller after the setsockopt.
template <typename Info>
void Fill(Info& info, uint16_t cipher_type, const std::string& key, const std::string& iv) {
  std::memset(&info, 0, sizeof(info));
  info.info.version = TLS_1_3_VERSION;
  info.info.cipher_type = cipher_type;
  std::memcpy(info.key, key.data(), sizeof(info.key));
  // TLS 1.3's 12-byte IV: the kernel takes its first 4 bytes as the salt, the rest as the iv;
  // the record sequence starts at 0.
  std::memcpy(info.salt, iv.data(), sizeof(info.salt));
  std::memcpy(info.iv, iv.data() + sizeof(info.salt), sizeof(info.iv));
}

template <typename Info>
absl::Status SetDirection(int fd, int direction, uint16_t cipher_type, const std::string& key,
                          const std::string& iv) {
  Info info;
  Fill(info, cipher_type, key, iv);
  const int r = ::setsockopt(fd, SOL_TLS, direction, &info, sizeof(info));
  const int err = errno;
  OPENSSL_cleanse(&info, sizeof(info));
  if (r != 0) {
    return ErrnoStatus(absl::StrCat("setsockopt(fd ", fd, ", SOL_TLS, ",
                                    direction == TLS_TX ? "TLS_TX" : "TLS_RX", ")"),
                       err);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status InstallKernelTls(int fd, const SSL* ssl, const TrafficSecrets& secrets,
                              TlsRole role) {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  if (cipher == nullptr) return absl::InternalError("kernel TLS: no negotiated cipher");
  const uint16_t id = SSL_CIPHER_get_protocol_id(cipher);
  const EVP_MD* md = id == 0x1302 ? EVP_sha384() : EVP_sha256();
  size_t key_len = 0;
  uint16_t cipher_type = 0;
  switch (id) {
    case 0x1301:
      key_len = 16;
      cipher_type = TLS_CIPHER_AES_GCM_128;
      break;
    case 0x1302:
      key_len = 32;
      cipher_type = TLS_CIPHER_AES_GCM_256;
      break;
    default:
      return absl::UnimplementedError(
          absl::StrCat("kernel TLS: cipher ", SSL_CIPHER_get_name(cipher), " not offloaded"));
  }
  if (secrets.client.empty() || secrets.server.empty()) {
    return absl::InternalError("kernel TLS: the handshake's traffic secrets were not captured");
  }
  if (::setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOPROTOOPT || err == EOPNOTSUPP) {
      return absl::UnimplementedError(absl::StrCat(
          "kernel TLS: this kernel offers no TLS upper-layer protocol (",
          ErrnoStatus("setsockopt(TCP_ULP, \"tls\")", err).message(), ")"));
    }
    return ErrnoStatus(absl::StrCat("setsockopt(fd ", fd, ", TCP_ULP, \"tls\")"), err);
  }
  const std::string& tx = role == TlsRole::kClient ? secrets.client : secrets.server;
  const std::string& rx = role == TlsRole::kClient ? secrets.server : secrets.client;
  for (const auto& [direction, secret] :
       {std::pair<int, const std::string*>{TLS_TX, &tx}, {TLS_RX, &rx}}) {
    auto key = ExpandLabel(md, *secret, "key", key_len);
    if (!key.ok()) return key.status();
    auto iv = ExpandLabel(md, *secret, "iv", 12);
    if (!iv.ok()) return iv.status();
    absl::Status set =
        key_len == 16
            ? SetDirection<tls12_crypto_info_aes_gcm_128>(fd, direction, cipher_type, *key, *iv)
            : SetDirection<tls12_crypto_info_aes_gcm_256>(fd, direction, cipher_type, *key, *iv);
    OPENSSL_cleanse(key->data(), key->size());
    OPENSSL_cleanse(iv->data(), iv->size());
    RETURN_IF_ERROR(set);
  }
  return absl::OkStatus();
}

}  // namespace migmover::tls
