#pragma once

#include <string>
#include <vector>

namespace kvwarden::kvwctl {

// A plain-text table with left-aligned columns, for humans.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace kvwarden::kvwctl
