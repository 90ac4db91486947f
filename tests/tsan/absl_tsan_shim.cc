// ThreadSanitizer annotations for Debian's (uninstrumented, shared) abseil synchronization.
//
// libabsl_synchronization.so is not built with -fsanitize=thread, so the __tsan_mutex_* calls
// abseil makes in a TSan build are missing: TSan sees no happens-before edge through
// absl::Mutex, absl::CondVar or absl::Notification and reports every field such a mutex guards.
// Linked into every binary of `--config=tsan` only (.bazelrc: --custom_malloc), this file defines
// abseil's out-of-line entry points itself; the executable's definitions interpose the
// library's for every caller (our code, gRPC, protobuf and abseil itself, whose internal calls
// go through the PLT). Each one forwards to the real function found with dlsym(RTLD_NEXT) and
// adds the annotations an abseil built with TSan makes (absl/synchronization/mutex.cc):
// pre_lock before a lock, post_lock after; pre_unlock before an unlock, post_unlock after. TSan
// ignores memory accesses between pre_* and post_*, so a Condition that abseil evaluates inside
// LockWhen/Await/Unlock (our code, on whichever thread unlocks) is not checked; an instrumented
// abseil checks it as if under the lock. Accesses outside the calls are checked as usual, and
// a race on data an absl::Mutex guards is still reported (seen: a field written without it).
// The exported symbols are the executable's own (linked in whole, see BUILD.bazel): ld exports
// them because the shared libraries linked in reference them, so no -rdynamic is needed.
//
// Outside a TSan build this file is empty.

#include "absl/base/config.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "absl/base/options.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

#define ABSL_TSAN_SHIM_STR2(x) #x
#define ABSL_TSAN_SHIM_STR(x) ABSL_TSAN_SHIM_STR2(x)

// The real definition of `mangled`, a name written with "@" for abseil's inline namespace
// ("4absl@5Mutex4LockEv" is absl::<ns>::Mutex::Lock()). Aborts if the library lacks it: a shim
// that silently did nothing would bring the false reports back.
void* Real(const char* mangled) {
  static const char kNs[] = ABSL_TSAN_SHIM_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  char name[256];
  const char* at = std::strchr(mangled, '@');
  std::snprintf(name, sizeof(name), "%.*s%zu%s%s", static_cast<int>(at - mangled), mangled,
                std::strlen(kNs), kNs, at + 1);
  void* fn = dlsym(RTLD_NEXT, name);
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_tsan_shim: %s not found: %s\n", name, dlerror());
    std::abort();
  }
  return fn;
}

// Resolved once per entry point (a data race-free lazy init: the pointer is the same whichever
// thread stores it).
#define REAL(type, mangled)                                                     \
  ([]() -> type {                                                               \
    static std::atomic<void*> fn{nullptr};                                      \
    void* p = fn.load(std::memory_order_acquire);                               \
    if (p == nullptr) {                                                         \
      p = Real(mangled);                                                        \
      fn.store(p, std::memory_order_release);                                   \
    }                                                                           \
    return reinterpret_cast<type>(p);                                           \
  }())

using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Time;

static_assert(sizeof(Mutex) == sizeof(intptr_t), "absl::Mutex is one word (mu_)");

// Whether the calling thread holds `mu` in shared mode (abseil's kMuWriter bit is clear).
unsigned HeldFlags(const Mutex* mu) {
  constexpr intptr_t kMuWriter = 0x0008L;
  const auto* word = reinterpret_cast<const std::atomic<intptr_t>*>(mu);
  return (word->load(std::memory_order_relaxed) & kMuWriter) ? 0 : __tsan_mutex_read_lock;
}

// Some entry points forward to others through the PLT, so to our definitions again
// (CondVar::WaitWithTimeout tail-calls WaitWithDeadline, Mutex::AwaitWithTimeout
// AwaitWithDeadline, LockWhenWithTimeout LockWhenWithDeadline): only the outermost call of a
// thread annotates, or TSan would see the mutex unlocked twice.
thread_local int shim_depth = 0;
struct Outermost {
  Outermost() : outermost(shim_depth++ == 0) {}
  ~Outermost() { --shim_depth; }
  const bool outermost;
};

// The three shapes of annotation, each made only by the outermost shim call of a thread.
// Lock: TSan sees the mutex taken once the real call has taken it (a try-lock may fail).
template <typename Fn, typename... Args>
auto Locking(Mutex* mu, unsigned flags, Fn real, Args... args) {
  Outermost o;
  if (o.outermost) __tsan_mutex_pre_lock(mu, flags);
  auto r = real(mu, args...);
  if (o.outermost) {
    unsigned failed = 0;
    if constexpr (std::is_same_v<decltype(r), bool>) {
      if ((flags & __tsan_mutex_try_lock) && !r) failed = __tsan_mutex_try_lock_failed;
    }
    __tsan_mutex_post_lock(mu, flags | failed, 0);
  }
  return r;
}
// Unlock: TSan sees the mutex released before the real call releases it.
template <typename Fn>
void Unlocking(Mutex* mu, unsigned flags, Fn real) {
  Outermost o;
  if (o.outermost) __tsan_mutex_pre_unlock(mu, flags);
  real(mu);
  if (o.outermost) __tsan_mutex_post_unlock(mu, flags);
}
// Await / CondVar::Wait: called holding `mu` (in either mode); the real call releases it while
// it waits and returns holding it again. Released before the call, re-acquired after it.
template <typename Self, typename Fn, typename... Args>
auto Waiting(Self* self, Mutex* mu, Fn real, Args... args) {
  Outermost o;
  const unsigned flags = o.outermost ? HeldFlags(mu) : 0;
  if (o.outermost) __tsan_mutex_pre_unlock(mu, flags);
  auto r = real(self, args...);
  if (o.outermost) {
    __tsan_mutex_post_unlock(mu, flags);
    __tsan_mutex_pre_lock(mu, flags);
    __tsan_mutex_post_lock(mu, flags, 0);
  }
  return r;
}

// Void results as a dummy value, so one template serves both.
template <typename... Args>
auto VoidToInt(void (*fn)(Args...)) {
  return [fn](Args... args) { fn(args...); return 0; };
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

// ---- Mutex ----

Mutex::~Mutex() {
  // As an instrumented abseil does; TSan forgets the mutex's state.
  __tsan_mutex_destroy(this, __tsan_mutex_not_static);
  REAL(void (*)(Mutex*), "_ZN4absl@5MutexD2Ev")(this);
}

void Mutex::Lock() {
  Locking(this, 0, VoidToInt(REAL(void (*)(Mutex*), "_ZN4absl@5Mutex4LockEv")));
}

void Mutex::ReaderLock() {
  Locking(this, __tsan_mutex_read_lock,
          VoidToInt(REAL(void (*)(Mutex*), "_ZN4absl@5Mutex10ReaderLockEv")));
}

bool Mutex::TryLock() {
  return Locking(this, __tsan_mutex_try_lock, REAL(bool (*)(Mutex*), "_ZN4absl@5Mutex7TryLockEv"));
}

bool Mutex::ReaderTryLock() {
  return Locking(this, __tsan_mutex_read_lock | __tsan_mutex_try_lock,
                 REAL(bool (*)(Mutex*), "_ZN4absl@5Mutex13ReaderTryLockEv"));
}

void Mutex::Unlock() { Unlocking(this, 0, REAL(void (*)(Mutex*), "_ZN4absl@5Mutex6UnlockEv")); }

void Mutex::ReaderUnlock() {
  Unlocking(this, __tsan_mutex_read_lock,
            REAL(void (*)(Mutex*), "_ZN4absl@5Mutex12ReaderUnlockEv"));
}

// LockWhen*: return holding the mutex whatever the result (a timeout only says the condition may
// be false). Not try-locks.
void Mutex::LockWhen(const Condition& cond) {
  Locking(this, 0,
          VoidToInt(REAL(void (*)(Mutex*, const Condition*),
                         "_ZN4absl@5Mutex8LockWhenERKNS0_9ConditionE")),
          &cond);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  Locking(this, __tsan_mutex_read_lock,
          VoidToInt(REAL(void (*)(Mutex*, const Condition*),
                         "_ZN4absl@5Mutex14ReaderLockWhenERKNS0_9ConditionE")),
          &cond);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  return Locking(this, 0,
                 REAL(bool (*)(Mutex*, const Condition*, Duration),
                      "_ZN4absl@5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE"),
                 &cond, timeout);
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  return Locking(this, 0,
                 REAL(bool (*)(Mutex*, const Condition*, Time),
                      "_ZN4absl@5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE"),
                 &cond, deadline);
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  return Locking(
      this, __tsan_mutex_read_lock,
      REAL(bool (*)(Mutex*, const Condition*, Duration),
           "_ZN4absl@5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE"),
      &cond, timeout);
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  return Locking(this, __tsan_mutex_read_lock,
                 REAL(bool (*)(Mutex*, const Condition*, Time),
                      "_ZN4absl@5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE"),
                 &cond, deadline);
}

void Mutex::Await(const Condition& cond) {
  Waiting(this, this,
          VoidToInt(REAL(void (*)(Mutex*, const Condition*),
                         "_ZN4absl@5Mutex5AwaitERKNS0_9ConditionE")),
          &cond);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  return Waiting(this, this,
                 REAL(bool (*)(Mutex*, const Condition*, Duration),
                      "_ZN4absl@5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE"),
                 &cond, timeout);
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  return Waiting(this, this,
                 REAL(bool (*)(Mutex*, const Condition*, Time),
                      "_ZN4absl@5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE"),
                 &cond, deadline);
}

// ---- CondVar: Wait* release `mu` and take it again. Signal/SignalAll need no annotation: the
// waiter's edge is the mutex. ----

void CondVar::Wait(Mutex* mu) {
  Waiting(this, mu,
          VoidToInt(REAL(void (*)(CondVar*, Mutex*), "_ZN4absl@7CondVar4WaitEPNS0_5MutexE")),
          mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  return Waiting(this, mu,
                 REAL(bool (*)(CondVar*, Mutex*, Duration),
                      "_ZN4absl@7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE"),
                 mu, timeout);
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  return Waiting(this, mu,
                 REAL(bool (*)(CondVar*, Mutex*, Time),
                      "_ZN4absl@7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE"),
                 mu, deadline);
}

// ---- Notification: HasBeenNotified() is an inline acquire load of notified_yet_ (compiled, so
// instrumented, in our code) that the library's store never released to. Notify() releases on
// that address first. (WaitForNotification* lock mutex_, which the Mutex shim annotates.) ----

namespace {
struct NotificationLayout {
  Mutex mutex_;
  std::atomic<bool> notified_yet_;
};
static_assert(sizeof(NotificationLayout) == sizeof(Notification), "absl::Notification layout");
}  // namespace

void Notification::Notify() {
  __tsan_release(&reinterpret_cast<NotificationLayout*>(this)->notified_yet_);
  REAL(void (*)(Notification*), "_ZN4absl@12Notification6NotifyEv")(this);
}

// ---- BlockingCounter: DecrementCount() is a fetch_sub inside the library; all but the last
// caller never touch the mutex Wait() acquires. ----

bool BlockingCounter::DecrementCount() {
  __tsan_release(this);
  return REAL(bool (*)(BlockingCounter*), "_ZN4absl@15BlockingCounter14DecrementCountEv")(this);
}

void BlockingCounter::Wait() {
  REAL(void (*)(BlockingCounter*), "_ZN4absl@15BlockingCounter4WaitEv")(this);
  __tsan_acquire(this);
}

ABSL_NAMESPACE_END
}  // namespace absl

#endif  // ABSL_HAVE_THREAD_SANITIZER
