#include "sandbox/id_map.h"

#include <grp.h>
#include <pwd.h>

namespace stoke {

uint32_t host_id_for(const HostIdRange& range, uint64_t seed) {
  // splitmix64 so neighbouring seeds do not land on neighbouring ids.
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return range.first + static_cast<uint32_t>(z % (range.count ? range.count : 1));
}

Status check_host_id_range(uint32_t uid, uint32_t gid) {
  if (uid < 1000 || gid < 1000)
    return plain_error("check host id", "uid " + std::to_string(uid) + "/gid " + std::to_string(gid) +
                                            " is privileged or a system account; use an id >= 1000");
  if (uid >= 0xfffffffeU || gid >= 0xfffffffeU)
    return plain_error("check host id", "uid/gid out of range");
  return {};
}

Status check_not_host_account(uint32_t uid, uint32_t gid) {
  // getpwuid_r: the sandbox must never run as (or own the files of) a host account.
  struct passwd pw, *pwp = nullptr;
  char buf[4096];
  if (getpwuid_r(uid, &pw, buf, sizeof buf, &pwp) == 0 && pwp != nullptr)
    return plain_error("check host id", "uid " + std::to_string(uid) + " is host account '" +
                                            pwp->pw_name + "'");
  struct group gr, *grp = nullptr;
  if (getgrgid_r(gid, &gr, buf, sizeof buf, &grp) == 0 && grp != nullptr)
    return plain_error("check host id", "gid " + std::to_string(gid) + " is host group '" +
                                            grp->gr_name + "'");
  return {};
}

Status check_unprivileged_host_id(uint32_t uid, uint32_t gid) {
  STOKE_TRY(check_host_id_range(uid, gid));
  return check_not_host_account(uid, gid);
}

std::string single_id_map(uint32_t host_id) { return block_id_map(host_id, 1); }

std::string block_id_map(uint32_t host_id, uint32_t count) {
  return "0 " + std::to_string(host_id) + " " + std::to_string(count) + "\n";
}

}  // namespace stoke
