#include "cache_service/core/sequences/table_events.h"

namespace kvwarden {

TableEvents& NoTableEvents() {
  static TableEvents* none = new TableEvents();  // never destroyed: used from any thread at exit
  return *none;
}

}  // namespace kvwarden
