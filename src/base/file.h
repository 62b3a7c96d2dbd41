// Whole-file helpers. write_file_atomic writes to "<path>.tmp.<pid>" and renames, so a reader
// (or a crash) never sees a half-written file.
#pragma once
#include <string>
#include <string_view>

namespace whale {

std::string read_file(const std::string& path);
void write_file_atomic(const std::string& path, std::string_view bytes);

// Streams bytes into a temp file; commit() fsyncs and renames it onto the final path.
// Destroyed without commit(), it removes the temp file: nothing half-written is ever left.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void write(const void* data, size_t size);
  void commit();

 private:
  std::string path_, temp_path_;
  int fd_ = -1;
};

}  // namespace whale
