#include "daemon/registry/device_registry.h"

#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace migmover {

const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kVfio:
      return "vfio-device";
    case DeviceKind::kSimulated:
      return "simulated";
    case DeviceKind::kSaveDataFd:
      return "save-data-fd";
    case DeviceKind::kResumeDataFd:
      return "resume-data-fd";
  }
  return "?";
}

absl::Status DeviceRegistry::CheckName(const std::string& name) {
  if (name.empty() || name.size() > 64) {
    // Never echoed: it may be megabytes.
    return absl::InvalidArgumentError(
        absl::StrCat("device name must be 1..64 characters, not ", name.size()));
  }
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' ||
          c == '-')) {
      return absl::InvalidArgumentError(
          absl::StrCat("device name '", absl::CHexEscape(name),
                       "' may only hold letters, digits and . _ : -"));
    }
  }
  return absl::OkStatus();
}

absl::Status DeviceRegistry::Add(std::unique_ptr<DeviceEntry> entry) {
  if (absl::Status s = CheckName(entry->name); !s.ok()) return s;
  absl::MutexLock l(&mu_);
  if (devices_.count(entry->name)) {
    return absl::AlreadyExistsError(absl::StrCat("a device named '", entry->name,
                                                 "' is already attached"));
  }
  std::string name = entry->name;
  LabelLocked(entry.get(), "");
  devices_.emplace(name, Slot{std::move(entry), ""});
  return absl::OkStatus();
}

void DeviceRegistry::LabelLocked(DeviceEntry* e, const std::string& session_id) {
  // The registry's lock, then the device's: the order Info and List take them in.
  absl::MutexLock l(&e->mu);
  if (e->device) e->device->SetLogLabels(e->name, session_id);
}

absl::StatusOr<std::vector<DeviceEntry*>> DeviceRegistry::Claim(
    const std::vector<std::string>& names, const std::string& session_id) {
  absl::MutexLock l(&mu_);
  std::set<std::string> seen;
  std::vector<DeviceEntry*> out;
  for (const auto& n : names) {
    if (!seen.insert(n).second) {
      return absl::InvalidArgumentError(absl::StrCat("device '", n, "' is listed twice"));
    }
    auto it = devices_.find(n);
    if (it == devices_.end()) {
      return absl::NotFoundError(absl::StrCat("no device named '", n, "' is attached"));
    }
    if (!it->second.session_id.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("device '", n, "' is in use by session '",
                                                        it->second.session_id, "'"));
    }
    out.push_back(it->second.entry.get());
  }
  for (const auto& n : names) devices_[n].session_id = session_id;
  // The devices' own log lines name the session now.
  for (DeviceEntry* e : out) LabelLocked(e, session_id);
  return out;
}

void DeviceRegistry::Release(const std::vector<std::string>& names,
                             const std::string& session_id) {
  absl::MutexLock l(&mu_);
  for (const auto& n : names) {
    auto it = devices_.find(n);
    if (it != devices_.end() && it->second.session_id == session_id) {
      it->second.session_id.clear();
      LabelLocked(it->second.entry.get(), "");
    }
  }
}

DeviceInfo DeviceRegistry::InfoOf(DeviceEntry& e, const std::string& session) {
  DeviceInfo info{e.name, e.kind};
  info.session_id = session;
  absl::MutexLock l(&e.mu);
  if (e.device) {
    info.features = e.device->features();
    info.state = e.device->last_known_state();
    info.description = e.device->Describe();
  } else {
    info.description = absl::StrCat(DeviceKindName(e.kind), " fd ", e.data_fd.get());
  }
  if (e.sim) info.description = absl::StrCat("simulated device (", e.sim->spec().ToString(), ")");
  return info;
}

absl::StatusOr<DeviceInfo> DeviceRegistry::Remove(const std::string& name) {
  std::unique_ptr<DeviceEntry> gone;
  DeviceInfo info;
  {
    absl::MutexLock l(&mu_);
    auto it = devices_.find(name);
    if (it == devices_.end()) {
      return absl::NotFoundError(absl::StrCat("no device named '", name, "' is attached"));
    }
    if (!it->second.session_id.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device '", name, "' is in use by session '", it->second.session_id, "'"));
    }
    info = InfoOf(*it->second.entry, "");
    gone = std::move(it->second.entry);
    devices_.erase(it);
  }
  return info;
}

absl::StatusOr<DeviceEntry*> DeviceRegistry::GetUnclaimed(const std::string& name) {
  absl::MutexLock l(&mu_);
  auto it = devices_.find(name);
  if (it == devices_.end()) {
    return absl::NotFoundError(absl::StrCat("no device named '", name, "' is attached"));
  }
  if (!it->second.session_id.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("device '", name, "' is in use by session '",
                                                      it->second.session_id, "'"));
  }
  return it->second.entry.get();
}

absl::StatusOr<DeviceInfo> DeviceRegistry::Info(const std::string& name) {
  absl::MutexLock l(&mu_);
  auto it = devices_.find(name);
  if (it == devices_.end()) {
    return absl::NotFoundError(absl::StrCat("no device named '", name, "' is attached"));
  }
  return InfoOf(*it->second.entry, it->second.session_id);
}

std::vector<DeviceInfo> DeviceRegistry::List() {
  absl::MutexLock l(&mu_);
  std::vector<DeviceInfo> out;
  for (auto& [name, slot] : devices_) out.push_back(InfoOf(*slot.entry, slot.session_id));
  return out;
}

}  // namespace migmover
