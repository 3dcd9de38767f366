#include "cache_service/util/process_fds.h"

#include <dirent.h>
#include <sys/resource.h>

#include <algorithm>

namespace kvwarden {

uint64_t RaiseFdLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  return lim.rlim_cur;
}

ProcessFds CountProcessFds() {
  ProcessFds out;
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    out.limit = static_cast<uint32_t>(std::min<rlim_t>(lim.rlim_cur, UINT32_MAX));
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) out.open += e->d_name[0] != '.' ? 1 : 0;
    closedir(d);
    --out.open;  // the directory stream's own fd
  }
  return out;
}

}  // namespace kvwarden
