// safetensors reading and writing, sharded checkpoints, FP8 weights, and every hostile file
// the reader must refuse with an error naming the file and the tensor.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "base/error.h"
#include "base/npy.h"
#include "model/transformer.h"
#include "test_util.h"

namespace whale {
namespace {

namespace fs = std::filesystem;
using testing::golden_dir;
using testing::TempDir;

std::string raw_file(const std::string& header, size_t data_bytes) {
  uint64_t n = header.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  bytes += header;
  bytes.append(data_bytes, '\x01');
  return bytes;
}

// Expects opening `bytes` as a safetensors file to fail with a message containing each of
// `needles` (and the file's path).
void expect_rejected(const std::string& bytes, std::vector<std::string> needles) {
  TempDir tmp;
  std::string path = tmp / "bad.safetensors";
  write_file_atomic(path, bytes);
  try {
    SafetensorsFile file(path);
    ADD_FAILURE() << "accepted a bad file; expected an error mentioning " << needles[0];
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    for (auto& n : needles) EXPECT_NE(message.find(n), std::string::npos) << message;
  }
}

TEST(Safetensors, RejectsHostileFiles) {
  expect_rejected("abc", {"shorter than"});
  {
    std::string bytes = raw_file("{}", 0);
    uint64_t huge = 1000;
    std::memcpy(bytes.data(), &huge, 8);
    expect_rejected(bytes, {"runs past the end"});
  }
  {
    std::string bytes = raw_file("{}", 0);
    uint64_t absurd = ~uint64_t{0};
    std::memcpy(bytes.data(), &absurd, 8);
    expect_rejected(bytes, {"absurd"});
  }
  expect_rejected(raw_file("{\"a\": [1,", 0), {"not valid JSON"});
  expect_rejected(raw_file("[1, 2]", 0), {"not a JSON object"});
  expect_rejected(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4),
                  {"'w'", "run past the data"});
  expect_rejected(raw_file(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
                  {"'w'", "needs 12 bytes"});
  expect_rejected(raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                           12),
                  {"overlap"});
  expect_rejected(raw_file(R"({"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 2]}})", 2),
                  {"'w'", "unsupported dtype Q9"});
  expect_rejected(raw_file(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", 0),
                  {"'w'", "non-negative"});
  expect_rejected(raw_file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8),
                  {"'w'", "begin > end"});
  expect_rejected(raw_file(R"({"w": {"dtype": "F32", "shape": [1]}})", 4), {"'w'", "data_offsets"});
  expect_rejected(raw_file(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296],
                               "data_offsets": [0, 4]}})",
                           4),
                  {"'w'", "absurd"});
  expect_rejected(raw_file(R"({"__metadata__": {"a": 1}})", 0), {"__metadata__"});
}

TEST(Safetensors, WritesAndReadsBack) {
  TempDir tmp;
  std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  TensorData a{{"a", DType::F32, {2, 3}}, {}};
  a.bytes.resize(24);
  std::memcpy(a.bytes.data(), values.data(), 24);
  TensorData b{{"b.bias", DType::BF16, {1}}, {0x80, 0x3f}};
  write_safetensors(tmp / "x.safetensors", {a, b}, {{"format", "pt"}});
  EXPECT_FALSE(fs::exists(tmp / "x.safetensors.tmp." + std::to_string(getpid())));
  SafetensorsFile file(tmp / "x.safetensors");
  ASSERT_EQ(file.tensors().size(), 2u);
  const TensorView& va = file.tensors().at("a");
  EXPECT_EQ(va.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(va.data, values.data(), 24), 0);
  EXPECT_EQ(file.tensors().at("b.bias").dtype, DType::BF16);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  // The data starts 32 bytes past a 64-byte boundary of the file (the header padded with
  // spaces), whatever the header's length.
  for (const std::string name : {"a", "a_longer_name", "a.much.longer.name.than.before"}) {
    a.spec.name = name;
    write_safetensors(tmp / "y.safetensors", {a});
    const std::string bytes = read_file(tmp / "y.safetensors");
    uint64_t header = 0;
    std::memcpy(&header, bytes.data(), 8);
    EXPECT_EQ((8 + header) % 64, 32u) << name;
    EXPECT_EQ(bytes.substr(8 + header),
              std::string(reinterpret_cast<const char*>(values.data()), 24));
    EXPECT_EQ(SafetensorsFile(tmp / "y.safetensors").tensors().at(name).shape, a.spec.shape);
  }
}

// Copies a fixture model folder so a test can damage it.
std::string copy_model(const std::string& name, const TempDir& tmp) {
  std::string dir = tmp / name;
  fs::copy(golden_dir(name), dir, fs::copy_options::recursive);
  return dir;
}

// Rewrites a model's single safetensors file through `edit` (which may rename, reshape or drop).
void rewrite_weights(const std::string& dir, const std::function<bool(TensorData&)>& edit) {
  std::vector<TensorData> tensors;
  {
    SafetensorsFile file(dir + "/model.safetensors");
    for (auto& [name, view] : file.tensors()) {
      TensorData t{{name, view.dtype, view.shape},
                   std::vector<uint8_t>(view.data, view.data + view.nbytes)};
      if (edit(t)) tensors.push_back(std::move(t));
    }
  }
  write_safetensors(dir + "/model.safetensors", tensors);
}

void expect_load_error(const std::string& dir, std::vector<std::string> needles) {
  try {
    Model::load(dir);
    ADD_FAILURE() << "loaded a broken model";
  } catch (const Error& e) {
    for (auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, MissingAndMisshapenTensorsAreNamed) {
  TempDir tmp;
  std::string dir = copy_model("v2_lite", tmp);
  rewrite_weights(dir, [](TensorData& t) {
    return t.spec.name != "model.layers.1.mlp.experts.3.up_proj.weight";
  });
  expect_load_error(dir, {"missing tensor 'model.layers.1.mlp.experts.3.up_proj.weight'"});

  TempDir tmp2;
  std::string dir2 = copy_model("v2_lite", tmp2);
  rewrite_weights(dir2, [](TensorData& t) {
    if (t.spec.name == "model.norm.weight") {
      t.spec.shape = {t.spec.shape[0] / 2};
      t.bytes.resize(t.bytes.size() / 2);
    }
    return true;
  });
  expect_load_error(dir2, {"'model.norm.weight'", "config implies [64]"});
}

TEST(Checkpoint, ShardIndexMustAgreeWithShards) {
  TempDir tmp;
  std::string dir = copy_model("v3_sharded", tmp);
  std::string index = read_file(dir + "/model.safetensors.index.json");
  auto j = nlohmann::json::parse(index);
  std::string name = j["weight_map"].begin().key();
  std::string file = j["weight_map"].begin().value();
  std::string other = file.find("00001") != std::string::npos ? "model-00002-of-00002.safetensors"
                                                              : "model-00001-of-00002.safetensors";
  j["weight_map"][name] = other;
  write_file_atomic(dir + "/model.safetensors.index.json", j.dump());
  expect_load_error(dir, {"'" + name + "'", other, "no such tensor"});
  j["weight_map"][name] = "../escape.safetensors";
  write_file_atomic(dir + "/model.safetensors.index.json", j.dump());
  expect_load_error(dir, {"outside the folder"});
  write_file_atomic(dir + "/model.safetensors.index.json", "{\"weight_map\": 3}");
  expect_load_error(dir, {"no weight_map"});
}

std::vector<float> logits_of(const std::string& dir, const std::vector<int>& tokens) {
  auto model = Model::load(dir);
  std::vector<float> logits(tokens.size() * model->config().vocab_size);
  KVCache cache = model->new_cache();
  model->forward(tokens.data(), static_cast<int>(tokens.size()), cache, logits.data());
  return logits;
}

TEST(Checkpoint, ShardedAndSingleFileGiveIdenticalLogits) {
  TempDir tmp;
  std::string dir = copy_model("v3_sharded", tmp);
  std::vector<TensorData> all;
  {
    Checkpoint checkpoint(dir);
    for (auto& [name, view] : checkpoint.tensors())
      all.push_back({{name, view->dtype, view->shape},
                     std::vector<uint8_t>(view->data, view->data + view->nbytes)});
  }
  for (auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() != ".json" ||
        entry.path().filename() == "model.safetensors.index.json")
      fs::remove(entry.path());
  fs::copy_file(golden_dir("v3_sharded") + "/tokens.json", dir + "/tokens.json",
                fs::copy_options::overwrite_existing);
  write_safetensors(dir + "/model.safetensors", all);
  auto tokens = testing::golden_tokens("v3_sharded");
  EXPECT_EQ(logits_of(dir, tokens), logits_of(golden_dir("v3_sharded"), tokens));
}

// FP8 weights are used as stored (dequantized inside the products): the same model with each
// e4m3 matrix expanded to f32 (code × block scale, exact) gives the same logits, and the bf16
// rounding of that expansion stays close.
TEST(Checkpoint, Fp8MatchesItsDequantizedCopy) {
  TempDir tmp;
  auto tokens = testing::golden_tokens("v3_fp8");
  auto fp8 = logits_of(golden_dir("v3_fp8"), tokens);
  for (DType target : {DType::F32, DType::BF16}) {
    std::string dir = tmp / (std::string("dequant_") + dtype_name(target));
    fs::copy(golden_dir("v3_fp8"), dir, fs::copy_options::recursive);
    SafetensorsFile source(golden_dir("v3_fp8") + "/model.safetensors");
    auto config = nlohmann::json::parse(read_file(dir + "/config.json"));
    config.erase("quantization_config");
    write_file_atomic(dir + "/config.json", config.dump());
    std::vector<TensorData> out;
    int converted = 0;
    for (auto& [name, view] : source.tensors()) {
      if (name.size() > 10 && name.ends_with("_scale_inv")) continue;
      if (view.dtype != DType::F8_E4M3) {
        out.push_back({{name, view.dtype, view.shape},
                       std::vector<uint8_t>(view.data, view.data + view.nbytes)});
        continue;
      }
      const TensorView& scale = source.tensors().at(name + "_scale_inv");
      const int64_t rows = view.shape[0], cols = view.shape[1], nbc = scale.shape[1];
      TensorData t{{name, target, view.shape}, {}};
      t.bytes.resize(static_cast<size_t>(rows * cols) * dtype_size(target));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          float s;
          std::memcpy(&s, scale.data + 4 * ((r / 128) * nbc + c / 128), 4);
          float v = e4m3_to_f32(view.data[r * cols + c]) * s;
          if (target == DType::F32) {
            std::memcpy(t.bytes.data() + 4 * (r * cols + c), &v, 4);
          } else {
            uint16_t b = f32_to_bf16(v);
            std::memcpy(t.bytes.data() + 2 * (r * cols + c), &b, 2);
          }
        }
      out.push_back(std::move(t));
      ++converted;
    }
    ASSERT_GT(converted, 10);
    write_safetensors(dir + "/model.safetensors", out);
    auto logits = logits_of(dir, tokens);
    double err = testing::relative_max_error(logits, fp8);
    if (target == DType::F32)
      EXPECT_LT(err, 1e-5);
    else
      EXPECT_LT(err, 2e-2);  // bf16 keeps 8 bits of each dequantized weight
  }
}

}  // namespace
}  // namespace whale
