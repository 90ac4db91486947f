// The traffic secrets of one TLS 1.3 connection, captured as OpenSSL derives them (through its
// key-log callback, the one place OpenSSL 3.0 hands them out), so kernel TLS can be given the
// application keys after the handshake. Never written anywhere: they live in a TrafficSecrets
// the handshake owns, and are wiped when it is done.
#ifndef MIGMOVER_TRANSPORT_TLS_TLS_KEYLOG_H_
#define MIGMOVER_TRANSPORT_TLS_TLS_KEYLOG_H_

#include <string>

typedef struct ssl_st SSL;

namespace migmover::tls {

struct TrafficSecrets {
  std::string client;  // CLIENT_TRAFFIC_SECRET_0, raw bytes.
  std::string server;  // SERVER_TRAFFIC_SECRET_0.
  ~TrafficSecrets();   // Wipes both.
};

// Where RecordTrafficSecret puts a connection's secrets: set with SSL_set_ex_data(ssl,
// TrafficSecretsIndex(), &secrets) before the handshake; connections without it keep nothing.
int TrafficSecretsIndex();

// SSL_CTX_set_keylog_callback's callback.
void RecordTrafficSecret(const SSL* ssl, const char* line);

}  // namespace migmover::tls

#endif  // MIGMOVER_TRANSPORT_TLS_TLS_KEYLOG_H_
