#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvwarden::kvwctl {

// `s` with every control character written as an escape ("\x1b", "\u009b"), so that a
// string a tenant or a server chose (a worker's name, an error message) cannot move the
// cursor, clear the screen or forge a row. `keep_newlines` keeps \n and \t (multi-line
// text such as the config). JSON output needs none of this: it escapes on its own.
std::string Printable(std::string_view s, bool keep_newlines = false);

// A plain-text table with left-aligned columns, for humans.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;  // cells through Printable

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace kvwarden::kvwctl
