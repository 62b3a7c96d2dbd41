// Whole-file helpers. write_file_atomic writes to "<path>.tmp.<pid>" and renames, so a reader
// (or a crash) never sees a half-written file.
#pragma once
#include <cstddef>
#include <cstdint>
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

// A whole file mapped read-only (the page cache holds it; nothing is read until touched),
// unmapped on destruction. Errors name the file: "cannot open PATH: reason", likewise stat and
// map, and a file shorter than min_size is "PATH: not a FORMAT file (N bytes, shorter than
// WHAT)", e.g. MappedFile(path, "GGUF", 24, "the 24-byte header").
// Drops the whole pages within [p, p + n) of a read-only file mapping from this process's memory
// (MADV_DONTNEED): they stay in the page cache and load again if read. Only for file mappings:
// on private anonymous memory it would zero them.
void release_mapped_pages(const void* p, size_t n);

class MappedFile {
 public:
  MappedFile(const std::string& path, const std::string& format, size_t min_size,
             const std::string& min_what);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(mapping_); }
  size_t size() const { return size_; }

 private:
  void* mapping_ = nullptr;
  size_t size_ = 0;
};

}  // namespace whale
