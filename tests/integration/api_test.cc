// The gRPC API's contract against real daemons: every RPC's canonical code for bad input,
// idempotent Prepare/Start, listing and forgetting sessions, the admission limit, daemon info,
// health checking and reflection.
#include <functional>
#include <string>
#include <vector>

#include "api/health.grpc.pb.h"
#include "daemon/base/version.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "grpcpp/impl/codegen/client_context.h"
#include "grpcpp/impl/codegen/rpc_method.h"
#include "grpcpp/impl/codegen/sync_stream.h"
#include "tests/integration/reflection_probe.pb.h"
#include "tests/integration/two_daemons.h"

namespace migmover {
namespace {

using testing::DaemonProcess;
using testing::TwoDaemons;
using v1::SessionStatus;

// One bad request and the code it must get.
struct BadCall {
  std::string what;
  std::function<grpc::Status()> call;
  grpc::StatusCode code;
};

class Api : public TwoDaemons {
 protected:
  template <typename Req, typename Resp, typename Method>
  static grpc::Status Call(v1::Migmover::Stub* stub, Method method, const Req& req) {
    grpc::ClientContext ctx;
    Resp resp;
    return (stub->*method)(&ctx, req, &resp);
  }

  v1::Migmover::Stub* src() { return src_->stub(); }
  v1::Migmover::Stub* dst() { return dst_->stub(); }

  grpc::Status Forget(DaemonProcess& d, const std::string& id, SessionStatus* out = nullptr) {
    grpc::ClientContext ctx;
    v1::ForgetSessionRequest req;
    req.set_session_id(id);
    SessionStatus o;
    return d.stub()->ForgetSession(&ctx, req, out ? out : &o);
  }
  std::vector<std::string> ListIds(DaemonProcess& d) {
    grpc::ClientContext ctx;
    v1::ListSessionsResponse resp;
    grpc::Status s = d.stub()->ListSessions(&ctx, v1::ListSessionsRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<std::string> ids;
    for (const auto& st : resp.sessions()) ids.push_back(st.session_id());
    return ids;
  }
  grpc::StatusCode GetCode(DaemonProcess& d, const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetSessionRequest req;
    req.set_session_id(id);
    SessionStatus o;
    return d.stub()->GetSession(&ctx, req, &o).error_code();
  }
};

TEST_F(Api, EveryRpcRefusesBadInputWithItsCode) {
  ASSERT_TRUE(Attach(*src_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "free", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("busy", {"d"}).ok());  // Claims the destination's "d".
  const std::string huge(10 * 1024, 'x');
  using M = v1::Migmover::Stub;
  auto attach = [&](const std::string& name, const std::string& spec) {
    v1::AttachDeviceRequest r;
    r.set_name(name);
    if (!spec.empty()) r.set_simulated(spec);
    return Call<v1::AttachDeviceRequest, v1::Device>(src(), &M::AttachDevice, r);
  };
  auto attach_handle = [&](uint64_t handle) {
    v1::AttachDeviceRequest r;
    r.set_name("h");
    r.set_fd_handle(handle);
    return Call<v1::AttachDeviceRequest, v1::Device>(src(), &M::AttachDevice, r);
  };
  auto detach = [&](M* stub, const std::string& name) {
    v1::DetachDeviceRequest r;
    r.set_name(name);
    return Call<v1::DetachDeviceRequest, v1::Device>(stub, &M::DetachDevice, r);
  };
  auto set_state = [&](M* stub, const std::string& name, const std::string& state) {
    v1::SetDeviceStateRequest r;
    r.set_name(name);
    r.set_state(state);
    return Call<v1::SetDeviceStateRequest, v1::SetDeviceStateResponse>(stub, &M::SetDeviceState,
                                                                       r);
  };
  auto prepare = [&](std::function<void(v1::PrepareDestinationRequest*)> edit) {
    v1::PrepareDestinationRequest r;
    r.set_session_id("p");
    r.add_devices("free");
    edit(&r);
    return Call<v1::PrepareDestinationRequest, SessionStatus>(dst(), &M::PrepareDestination, r);
  };
  auto start = [&](std::function<void(v1::StartSourceRequest*)> edit) {
    v1::StartSourceRequest r;
    r.set_session_id("s");
    r.add_devices("d");
    r.set_peer(dst_->peer_address());
    r.set_token(std::string(32, 't'));
    edit(&r);
    return Call<v1::StartSourceRequest, SessionStatus>(src(), &M::StartSource, r);
  };
  auto switchover = [&](M* stub, const std::string& id) {
    v1::SwitchoverRequest r;
    r.set_session_id(id);
    return Call<v1::SwitchoverRequest, SessionStatus>(stub, &M::Switchover, r);
  };
  auto bandwidth = [&](M* stub, const std::string& id) {
    v1::SetBandwidthRequest r;
    r.set_session_id(id);
    r.set_bytes_per_second(1);
    return Call<v1::SetBandwidthRequest, SessionStatus>(stub, &M::SetBandwidth, r);
  };
  auto get = [&](const std::string& id) {
    v1::GetSessionRequest r;
    r.set_session_id(id);
    return Call<v1::GetSessionRequest, SessionStatus>(dst(), &M::GetSession, r);
  };
  auto watch = [&](const std::string& id) {
    grpc::ClientContext ctx;
    v1::WatchSessionRequest r;
    r.set_session_id(id);
    auto reader = dst()->WatchSession(&ctx, r);
    SessionStatus s;
    while (reader->Read(&s)) {
    }
    return reader->Finish();
  };
  auto cancel = [&](const std::string& id) { return Cancel(*dst_, id); };
  auto forget = [&](const std::string& id) { return Forget(*dst_, id); };
  auto resolve = [&](const std::string& id, v1::ResolveSessionRequest::Outcome outcome) {
    v1::ResolveSessionRequest r;
    r.set_session_id(id);
    r.set_outcome(outcome);
    return Call<v1::ResolveSessionRequest, SessionStatus>(dst(), &M::ResolveSession, r);
  };
  const auto kRun = v1::ResolveSessionRequest::RUN;
  using C = grpc::StatusCode;

  const std::vector<BadCall> calls = {
      {"AttachDevice 10 KB name", [&] { return attach(huge, "size=1MiB"); }, C::INVALID_ARGUMENT},
      {"AttachDevice control characters in the name",
       [&] { return attach("a\x01\x1b[2Jb", "size=1MiB"); }, C::INVALID_ARGUMENT},
      {"AttachDevice no source", [&] { return attach("e", ""); }, C::INVALID_ARGUMENT},
      {"AttachDevice bad spec", [&] { return attach("e", "size=lots"); }, C::INVALID_ARGUMENT},
      {"AttachDevice 10 KB spec", [&] { return attach("e", huge); }, C::INVALID_ARGUMENT},
      {"AttachDevice unknown handle", [&] { return attach_handle(987654); }, C::NOT_FOUND},
      {"AttachDevice taken name", [&] { return attach("d", "size=1MiB"); }, C::ALREADY_EXISTS},
      {"DetachDevice unknown", [&] { return detach(src(), "nope"); }, C::NOT_FOUND},
      {"DetachDevice 10 KB name", [&] { return detach(src(), huge); }, C::INVALID_ARGUMENT},
      {"DetachDevice in a session", [&] { return detach(dst(), "d"); }, C::FAILED_PRECONDITION},
      {"SetDeviceState unknown state", [&] { return set_state(src(), "d", "FLYING"); },
       C::INVALID_ARGUMENT},
      {"SetDeviceState unknown device", [&] { return set_state(src(), "nope", "STOP"); },
       C::NOT_FOUND},
      {"SetDeviceState device in a session", [&] { return set_state(dst(), "d", "STOP"); },
       C::FAILED_PRECONDITION},
      {"PrepareDestination empty id",
       [&] { return prepare([](auto* r) { r->set_session_id(""); }); }, C::INVALID_ARGUMENT},
      {"PrepareDestination 10 KB id",
       [&] { return prepare([&](auto* r) { r->set_session_id(huge); }); }, C::INVALID_ARGUMENT},
      {"PrepareDestination 300 devices",
       [&] {
         return prepare([](auto* r) {
           for (int i = 0; i < 300; ++i) r->add_devices("free");
         });
       },
       C::INVALID_ARGUMENT},
      {"PrepareDestination unknown device",
       [&] { return prepare([](auto* r) { r->set_devices(0, "nope"); }); }, C::NOT_FOUND},
      {"PrepareDestination device busy",
       [&] { return prepare([](auto* r) { r->set_devices(0, "d"); }); }, C::FAILED_PRECONDITION},
      {"PrepareDestination bad final state",
       [&] { return prepare([](auto* r) { r->set_final_state("FLYING"); }); },
       C::INVALID_ARGUMENT},
      {"PrepareDestination short token",
       [&] { return prepare([](auto* r) { r->set_token("short"); }); }, C::INVALID_ARGUMENT},
      {"PrepareDestination chunk size 1",
       [&] { return prepare([](auto* r) { r->mutable_options()->set_chunk_size(1); }); },
       C::INVALID_ARGUMENT},
      {"PrepareDestination id taken by another request",
       [&] { return prepare([](auto* r) { r->set_session_id("busy"); }); }, C::ALREADY_EXISTS},
      {"StartSource no token", [&] { return start([](auto* r) { r->clear_token(); }); },
       C::INVALID_ARGUMENT},
      {"StartSource bad peer", [&] { return start([](auto* r) { r->set_peer("no-port"); }); },
       C::INVALID_ARGUMENT},
      {"StartSource 10 KB peer", [&] { return start([&](auto* r) { r->set_peer(huge); }); },
       C::INVALID_ARGUMENT},
      {"StartSource 99 streams",
       [&] { return start([](auto* r) { r->mutable_options()->set_streams(99); }); },
       C::INVALID_ARGUMENT},
      {"StartSource unknown transport",
       [&] { return start([](auto* r) { r->mutable_options()->set_transport("warp"); }); },
       C::INVALID_ARGUMENT},
      {"StartSource transport this daemon lacks",
       [&] { return start([](auto* r) { r->mutable_options()->set_transport("dpdk"); }); },
       C::FAILED_PRECONDITION},
      {"StartSource unknown device", [&] { return start([](auto* r) { r->set_devices(0, "x"); }); },
       C::NOT_FOUND},
      {"Switchover unknown", [&] { return switchover(src(), "nope"); }, C::NOT_FOUND},
      {"Switchover a destination", [&] { return switchover(dst(), "busy"); },
       C::FAILED_PRECONDITION},
      {"SetBandwidth unknown", [&] { return bandwidth(src(), "nope"); }, C::NOT_FOUND},
      {"SetBandwidth a destination", [&] { return bandwidth(dst(), "busy"); },
       C::FAILED_PRECONDITION},
      {"WatchSession unknown", [&] { return watch("nope"); }, C::NOT_FOUND},
      {"WatchSession 10 KB id", [&] { return watch(huge); }, C::INVALID_ARGUMENT},
      {"GetSession unknown", [&] { return get("nope"); }, C::NOT_FOUND},
      {"GetSession 10 KB id", [&] { return get(huge); }, C::INVALID_ARGUMENT},
      {"CancelSession unknown", [&] { return cancel("nope"); }, C::NOT_FOUND},
      {"ForgetSession unknown", [&] { return forget("nope"); }, C::NOT_FOUND},
      {"ForgetSession running", [&] { return forget("busy"); }, C::FAILED_PRECONDITION},
      {"ResolveSession no outcome",
       [&] { return resolve("busy", v1::ResolveSessionRequest::OUTCOME_UNSPECIFIED); },
       C::INVALID_ARGUMENT},
      {"ResolveSession unknown", [&] { return resolve("nope", kRun); }, C::NOT_FOUND},
      {"ResolveSession not in doubt", [&] { return resolve("busy", kRun); },
       C::FAILED_PRECONDITION},
  };
  for (const BadCall& c : calls) {
    grpc::Status s = c.call();
    EXPECT_EQ(s.error_code(), c.code) << c.what << ": " << s.error_message().substr(0, 300);
    // A clear error, never the request echoed at length, nor its control characters raw.
    EXPECT_LT(s.error_message().size(), 400u) << c.what;
    EXPECT_EQ(s.error_message().find('\x1b'), std::string::npos) << c.what;
    EXPECT_FALSE(s.error_message().empty()) << c.what;
  }
  // Refused requests changed nothing: no session besides "busy", the devices unclaimed.
  EXPECT_EQ(ListIds(*src_), std::vector<std::string>{});
  EXPECT_EQ(ListIds(*dst_), std::vector<std::string>{"busy"});
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "free"), "RUNNING");
  ASSERT_TRUE(Cancel(*dst_, "busy").ok());
}

TEST_F(Api, PrepareAndStartAreIdempotentForTheSameRequest) {
  ASSERT_TRUE(Attach(*src_, "d", "size=4MiB,seed=3").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=4MiB").ok());
  v1::PrepareDestinationRequest prep;
  prep.set_session_id("idem");
  prep.add_devices("d");
  SessionStatus first, again;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(dst()->PrepareDestination(&ctx, prep, &first).ok());
  }
  ASSERT_EQ(first.token().size(), 32u);
  {
    // The reply was lost; the agent asks again: the same session, the same generated secret.
    grpc::ClientContext ctx;
    ASSERT_TRUE(dst()->PrepareDestination(&ctx, prep, &again).ok());
  }
  EXPECT_EQ(again.token(), first.token());
  EXPECT_EQ(again.phase(), SessionStatus::PREPARED);
  {
    v1::PrepareDestinationRequest other = prep;
    other.set_final_state("STOP");
    grpc::ClientContext ctx;
    SessionStatus o;
    grpc::Status s = dst()->PrepareDestination(&ctx, other, &o);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  }
  Remember("idem", first.token());
  // Started twice with one request: one source session, one migration.
  ASSERT_TRUE(Start("idem", {"d"}, /*precopy=*/true).ok());
  ASSERT_TRUE(Start("idem", {"d"}, /*precopy=*/true).ok());
  EXPECT_EQ(ListIds(*src_), std::vector<std::string>{"idem"});
  bandwidth_ = 1 << 20;  // A different request under the taken id.
  EXPECT_EQ(Start("idem", {"d"}, /*precopy=*/true).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  Ended e = SwitchoverAndWait("idem");
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
  // After it ended the same request still answers with it (a retry never migrates twice).
  bandwidth_ = 0;
  ASSERT_TRUE(Start("idem", {"d"}, /*precopy=*/true).ok());
  EXPECT_EQ(Get(*src_, "idem").phase(), SessionStatus::SUCCEEDED);
}

TEST_F(Api, EndedSessionsAreListedUntilForgotten) {
  ASSERT_TRUE(Attach(*dst_, "a", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "b", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("one", {"a"}).ok());
  ASSERT_TRUE(Prepare("two", {"b"}).ok());
  EXPECT_EQ(ListIds(*dst_), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(Forget(*dst_, "one").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(Cancel(*dst_, "one").ok());
  EXPECT_EQ(ListIds(*dst_), (std::vector<std::string>{"one", "two"}));
  SessionStatus last;
  ASSERT_TRUE(Forget(*dst_, "one", &last).ok());
  EXPECT_EQ(last.phase(), SessionStatus::CANCELLED);
  EXPECT_EQ(ListIds(*dst_), std::vector<std::string>{"two"});
  EXPECT_EQ(GetCode(*dst_, "one"), grpc::StatusCode::NOT_FOUND);
  // The id is free again, for any request.
  EXPECT_TRUE(Prepare("one", {"a"}, "", "another secret, 16+ bytes").ok());
  ASSERT_TRUE(Cancel(*dst_, "one").ok());
  ASSERT_TRUE(Cancel(*dst_, "two").ok());
}

// Cancelling an ended session: one that failed or was cancelled stays so (OK: what the cancel
// wants holds); one that SUCCEEDED says so, on either side, rather than a reason that no longer
// applies ("held for the source's decision").
TEST_F(Api, CancelAfterTheEndSaysWhatHappened) {
  ASSERT_TRUE(Attach(*src_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("done", {"d"}).ok());
  ASSERT_TRUE(Start("done", {"d"}, /*precopy=*/false).ok());
  auto [s, d] = SwitchoverAndWait("done");
  ASSERT_TRUE(BothSucceeded(s, d));
  for (DaemonProcess* daemon : {src_.get(), dst_.get()}) {
    grpc::Status st = Cancel(*daemon, "done");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
    EXPECT_NE(st.error_message().find("already SUCCEEDED"), std::string::npos)
        << st.error_message();
  }
  ASSERT_TRUE(Prepare("gone", {"d"}).ok());
  ASSERT_TRUE(Cancel(*dst_, "gone").ok());
  EXPECT_TRUE(Cancel(*dst_, "gone").ok()) << "idempotent";
}

class ApiLimits : public Api {
 protected:
  ApiLimits() {
    dst_flags_.push_back("--max_sessions=2");
    dst_flags_.push_back("--session_retention_s=1");
  }
};

TEST_F(ApiLimits, SessionsBeyondTheLimitAreRefusedAndChangeNothing) {
  for (const char* d : {"a", "b", "c"}) ASSERT_TRUE(Attach(*dst_, d, "size=1MiB").ok());
  ASSERT_TRUE(Prepare("a", {"a"}).ok());
  ASSERT_TRUE(Prepare("b", {"b"}).ok());
  grpc::Status refused = Prepare("c", {"c"});
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("--max_sessions=2"), std::string::npos);
  EXPECT_EQ(GetCode(*dst_, "c"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(StateOf(*dst_, "c"), "RUNNING");
  // An ended session no longer counts.
  ASSERT_TRUE(Cancel(*dst_, "a").ok());
  ASSERT_TRUE(Prepare("c", {"c"}).ok());
  ASSERT_TRUE(Cancel(*dst_, "b").ok());
  ASSERT_TRUE(Cancel(*dst_, "c").ok());
}

TEST_F(ApiLimits, EndedSessionsAreForgottenAfterTheRetentionTime) {
  ASSERT_TRUE(Attach(*dst_, "a", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("a", {"a"}).ok());
  ASSERT_TRUE(Cancel(*dst_, "a").ok());
  EXPECT_EQ(GetCode(*dst_, "a"), grpc::StatusCode::OK);
  // --session_retention_s=1: gone within a few seconds of ending (polled: it has no event).
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (GetCode(*dst_, "a") == grpc::StatusCode::OK && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(GetCode(*dst_, "a"), grpc::StatusCode::NOT_FOUND);
}

TEST_F(Api, DaemonInfoDescribesTheDaemon) {
  grpc::ClientContext ctx;
  v1::DaemonInfo info;
  ASSERT_TRUE(dst()->GetDaemonInfo(&ctx, v1::GetDaemonInfoRequest(), &info).ok());
  EXPECT_EQ(info.version(), kMigmoverVersion);
  EXPECT_EQ(info.peer_protocol_version(), 6u);
  EXPECT_EQ(info.peer_address(), dst_->peer_address());
  ASSERT_GE(info.transports_size(), 1);
  EXPECT_EQ(info.transports(0), "tcp");
  EXPECT_NE(info.peer_security().find("TLS 1.3"), std::string::npos) << info.peer_security();
  EXPECT_FALSE(info.io_engine().empty());
  EXPECT_EQ(info.limits().max_sessions(), 64u);
  EXPECT_EQ(info.limits().max_devices_per_session(), 256u);
  EXPECT_EQ(info.limits().session_retention_seconds(), 3600u);
  std::vector<std::string> features(info.features().begin(), info.features().end());
  for (const char* f : {"pre_copy", "data_fd", "peer_tls", "idempotent_sessions"}) {
    EXPECT_NE(std::find(features.begin(), features.end(), f), features.end()) << f;
  }
}

TEST_F(Api, HealthCheckingAndReflectionAreServed) {
  auto health = grpc::health::v1::Health::NewStub(dst_->channel());
  for (const char* service : {"", "migmover.v1.Migmover"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = health->Check(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << service << ": " << s.error_message();
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("no.such.Service");
    grpc::health::v1::HealthCheckResponse resp;
    EXPECT_EQ(health->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // The reflection protocol's own method, with the probe's messages.
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING, dst_->channel());
  namespace probe = migmover::test::reflection;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<probe::ServerReflectionRequest,
                                           probe::ServerReflectionResponse>>
      stream(grpc::internal::ClientReaderWriterFactory<
             probe::ServerReflectionRequest,
             probe::ServerReflectionResponse>::Create(dst_->channel().get(), method, &ctx));
  probe::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  stream->WritesDone();
  probe::ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  std::vector<std::string> services;
  for (const auto& s : resp.list_services_response().service()) services.push_back(s.name());
  EXPECT_NE(std::find(services.begin(), services.end(), "migmover.v1.Migmover"), services.end());
  EXPECT_NE(std::find(services.begin(), services.end(), "grpc.health.v1.Health"), services.end());
  while (stream->Read(&resp)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace migmover
