// safetensors I/O: bit-exact round trips of every dtype, strided inputs, metadata, a file
// with a hand-written HF-layout header, one InputError per kind of malformed file, and the
// atomic write leaving nothing partial behind when the writer throws.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/atomic_file.h"
#include "engine/safetensors.h"
#include "tests/harness.h"

namespace r1 {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() /
                        ("r1_st_" + std::to_string(test::run_seed()) + "_XXXXXX")).string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  size_t entries() const {
    return static_cast<size_t>(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()));
  }
  fs::path dir_;
};

// Random raw bytes in every element (bool: 0/1 only, the only valid values).
Tensor random_bytes(const Shape& shape, DType dt, uint64_t seed) {
  Tensor t = Tensor::empty(shape, dt);
  std::mt19937_64 rng(seed);
  auto* p = static_cast<unsigned char*>(t.data_ptr());
  for (size_t i = 0; i < t.nbytes(); ++i)
    p[i] = dt == DType::Bool ? static_cast<unsigned char>(rng() & 1) : static_cast<unsigned char>(rng());
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A file with `header` (padded to 8 like HF) and `data` after it.
void write_with_header(const std::string& path, std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  write_raw(path, le64(header.size()) + header + data);
}

TEST_F(SafetensorsTest, RoundTripEveryDtypeBitExact) {
  const DType all[] = {DType::F32, DType::F64,  DType::BF16, DType::F16, DType::E4M3,
                       DType::E5M2, DType::I32, DType::I64,  DType::U8,  DType::Bool};
  // Odd byte counts (u8 (3, 5)) ahead of wide types check that the writer keeps views aligned.
  const Shape shapes[] = {{3, 5}, {7}, {2, 3, 4}, {}, {0, 3}};
  std::vector<std::pair<std::string, Tensor>> ts;
  uint64_t k = 0;
  for (DType dt : all)
    for (const Shape& s : shapes)
      ts.emplace_back(fmt::format("{}.{}", dtype_name(dt), k), random_bytes(s, dt, test::case_seed(k++)));
  save_safetensors(file("all.safetensors"), ts);

  const SafetensorsFile f = SafetensorsFile::open(file("all.safetensors"));
  EXPECT_EQ(f.names().size(), ts.size());
  {  // HF's layout: the header is padded so the data buffer starts 8-aligned.
    std::ifstream in(file("all.safetensors"), std::ios::binary);
    unsigned char len[8];
    in.read(reinterpret_cast<char*>(len), 8);
    EXPECT_EQ(len[0] % 8, 0);
  }
  for (const auto& [name, t] : ts) {
    ASSERT_TRUE(f.has(name)) << name;
    const Tensor got = f.get(name);
    EXPECT_TRUE(same_bytes(got, t)) << name << " " << got.str() << " vs " << t.str();
    // Aligned offsets come back as views over the one mapping, not copies.
    EXPECT_EQ(got.storage(), f.get(ts[0].first).storage()) << name;
  }
  EXPECT_FALSE(f.has("nope"));
  EXPECT_THROW(f.get("nope"), InputError);
}

TEST_F(SafetensorsTest, StridedInputsSaveTheirLogicalValues) {
  const uint64_t seed = test::run_seed();
  const Tensor base = Tensor::randn({6, 8}, seed);
  const Tensor tr = base.transpose(0, 1);             // (8, 6), strides (1, 8)
  const Tensor nr = base.narrow(1, 3, 4);             // offset 3, row stride 8
  const Tensor bc = Tensor::randn({1, 5}, seed + 1, DType::F64).expand({3, 5});  // stride 0
  save_safetensors(file("s.safetensors"), {{"tr", tr}, {"nr", nr}, {"bc", bc}});
  const SafetensorsFile f = SafetensorsFile::open(file("s.safetensors"));
  EXPECT_EQ(f.get("tr").shape(), (Shape{8, 6}));
  EXPECT_EQ(f.get("tr").to_double_vector(), tr.contiguous().to_double_vector());
  EXPECT_EQ(f.get("nr").to_double_vector(), nr.contiguous().to_double_vector());
  EXPECT_EQ(f.get("bc").to_double_vector(), bc.contiguous().to_double_vector());
}

TEST_F(SafetensorsTest, MetadataKeptAndTensorsOutliveTheFileObject) {
  const Tensor x = Tensor::randn({4, 3}, test::run_seed());
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "123"}, {"é", "ü \"q\""}};
  save_safetensors(file("m.safetensors"), {{"x", x}}, meta);
  Tensor got;
  {
    const SafetensorsFile f = SafetensorsFile::open(file("m.safetensors"));
    EXPECT_EQ(f.metadata(), meta);
    got = f.get("x");
  }
  EXPECT_EQ(got.to_double_vector(), x.to_double_vector());  // the mapping is still alive
  // Copy-on-write: writing into a loaded tensor does not change the file.
  got.fill_(3.0);
  EXPECT_EQ(SafetensorsFile::open(file("m.safetensors")).get("x").to_double_vector(),
            x.to_double_vector());
}

TEST_F(SafetensorsTest, HandWrittenHfLayoutLoads) {
  // As HF's writer lays it out: __metadata__ first, offsets contiguous from 0, header padded
  // with spaces to a multiple of 8. bf16 bits: 1.0 = 0x3f80, -2.0 = 0xc000, 0.5 = 0x3f00,
  // 3.0 = 0x4040; i64 little-endian.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"bias":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
      R"("weight":{"dtype":"BF16","shape":[2,2],"data_offsets":[12,20]},)"
      R"("ids":{"dtype":"I64","shape":[2],"data_offsets":[24,40]}})";
  std::string data;
  for (float v : {0.25f, -1.5f, 1e-3f}) data.append(reinterpret_cast<const char*>(&v), 4);
  for (uint16_t b : {0x3f80, 0xc000, 0x3f00, 0x4040}) data.append(reinterpret_cast<const char*>(&b), 2);
  data.append(4, '\0');  // a gap the format allows (HF's own writer never leaves one)
  for (int64_t v : {int64_t{-7}, int64_t{1} << 40}) data.append(reinterpret_cast<const char*>(&v), 8);
  write_with_header(file("hf.safetensors"), header, data);

  const SafetensorsFile f = SafetensorsFile::open(file("hf.safetensors"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"bias", "weight", "ids"}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.get("bias").to_float_vector(), (std::vector<float>{0.25f, -1.5f, 1e-3f}));
  EXPECT_EQ(f.get("weight").dtype(), DType::BF16);
  EXPECT_EQ(f.get("weight").shape(), (Shape{2, 2}));
  EXPECT_EQ(f.get("weight").to_double_vector(), (std::vector<double>{1.0, -2.0, 0.5, 3.0}));
  EXPECT_EQ(f.get("ids").to_int_vector(), (std::vector<int64_t>{-7, int64_t{1} << 40}));
}

TEST_F(SafetensorsTest, UnalignedOffsetIsCopiedOut) {
  // A 2-byte u8 tensor first puts the f32 tensor at data offset 2: no f32 view can start there.
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})";
  std::string data = "\x05\x06";
  for (float v : {1.25f, -8.0f}) data.append(reinterpret_cast<const char*>(&v), 4);
  write_with_header(file("u.safetensors"), header, data);
  const SafetensorsFile f = SafetensorsFile::open(file("u.safetensors"));
  EXPECT_EQ(f.get("a").to_int_vector(), (std::vector<int64_t>{5, 6}));
  const Tensor b = f.get("b");
  EXPECT_EQ(b.to_float_vector(), (std::vector<float>{1.25f, -8.0f}));
  EXPECT_NE(b.storage(), f.get("a").storage());
}

TEST_F(SafetensorsTest, MalformedFilesThrowOneLineInputErrorNamingTheFile) {
  const std::string t8(8, '\x11');  // 8 data bytes
  struct Bad {
    const char* name;
    std::string bytes;
    const char* expect;  // a word of the message
  };
  auto with_header = [&](std::string h, const std::string& data) {
    h.append((8 - h.size() % 8) % 8, ' ');
    return le64(h.size()) + h + data;
  };
  const std::vector<Bad> bad = {
      {"short", "abc", "shorter"},
      {"hdr_len", le64(1000) + "{}", "beyond the file"},
      {"json", with_header(R"({"a": {"dtype": )", t8), "bad JSON"},
      {"not_object", with_header("[1, 2]", t8), "not a JSON object"},
      {"missing", with_header(R"({"a":{"dtype":"F32","shape":[2]}})", t8), "missing field 'data_offsets'"},
      {"dtype", with_header(R"({"a":{"dtype":"F13","shape":[2],"data_offsets":[0,8]}})", t8), "unknown dtype"},
      {"size", with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", t8), "needs 12 bytes"},
      {"beyond", with_header(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", t8), "beyond the data"},
      {"order", with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", t8), "out of order"},
      {"overlap", with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", t8), "overlap"},
      {"negative", with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", t8), "negative dim"},
      {"float_dim", with_header(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", t8), "not an integer"},
      {"meta", with_header(R"({"__metadata__":{"k":3}})", ""), "not a string"},
      {"huge", with_header(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", t8), "too many"},
  };
  for (const Bad& b : bad) {
    const std::string path = file(std::string("bad_") + b.name + ".safetensors");
    write_raw(path, b.bytes);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << b.name << ": no error";
    } catch (const InputError& e) {
      const std::string msg = e.what();
      if (std::getenv("R1_TEST_VERBOSE")) std::printf("%s\n", msg.c_str());
      EXPECT_NE(msg.find(path), std::string::npos) << b.name << ": " << msg;
      EXPECT_NE(msg.find(b.expect), std::string::npos) << b.name << ": " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << b.name << ": " << msg;
      const bool per_tensor = b.expect != std::string("shorter") &&
                              b.expect != std::string("beyond the file") &&
                              b.expect != std::string("bad JSON") &&
                              b.expect != std::string("not a JSON object") &&
                              b.expect != std::string("not a string");
      if (per_tensor) {
        EXPECT_NE(msg.find("'a'"), std::string::npos) << b.name << " names the tensor: " << msg;
      }
    }
  }
  EXPECT_THROW(SafetensorsFile::open(file("does_not_exist.safetensors")), InputError);
}

TEST_F(SafetensorsTest, FailedWriteLeavesOldFileAndNoTemp) {
  const std::string path = file("ckpt.safetensors");
  write_raw(path, "old");
  const Tensor x = Tensor::randn({64, 64}, test::run_seed());
  // The undefined tensor is reached after the header and x's bytes were written.
  EXPECT_THROW(save_safetensors(path, {{"x", x}, {"broken", Tensor()}}), Error);
  EXPECT_EQ(entries(), 1u);
  std::ifstream in(path, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "old");

  {  // The raw AtomicFile: bytes written, then an exception before commit.
    const std::string p2 = file("other.bin");
    try {
      AtomicFile f(p2);
      f.write(std::string(1 << 20, 'x'));
      EXPECT_TRUE(fs::exists(f.temp_path()));
      throw std::runtime_error("writer failed");
    } catch (const std::runtime_error&) {
    }
    EXPECT_FALSE(fs::exists(p2));
    EXPECT_EQ(entries(), 1u);
  }
  save_safetensors(path, {{"x", x}});  // a successful write replaces the old file
  EXPECT_EQ(entries(), 1u);
  EXPECT_EQ(SafetensorsFile::open(path).get("x").to_double_vector(), x.to_double_vector());
  EXPECT_THROW(AtomicFile(file("no_such_dir/f.bin")), InputError);
}

}  // namespace
}  // namespace r1
