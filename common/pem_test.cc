// ReadPemFile, behind the TLS flags of sparse-server and sparse-cli
// (common/pem.h): a PEM file is returned whole, byte for byte; a file that
// cannot be read is NOT_FOUND and one with no "-----BEGIN " block is
// INVALID_ARGUMENT, both naming the flag and the path the operator gave.
#include "common/pem.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/temp_dir.h"

namespace sparse {
namespace {

using ::sparse::testing::TempDir;
using ::testing::HasSubstr;

constexpr char kFlag[] = "--tls_cert";

constexpr char kCertificate[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBszCCAVmgAwIBAgIUYm9ndXMgY2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqG\n"
    "SM49BAMCMBQxEjAQBgNVBAMMCWxvY2FsaG9zdDAeFw0yNDAxMDEwMDAwMDBaFw0z\n"
    "-----END CERTIFICATE-----\n";

constexpr char kKey[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYm9ndXMga2V5IGZv\n"
    "-----END PRIVATE KEY-----\n";

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& contents) {
  const std::filesystem::path path = dir / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  EXPECT_TRUE(out) << "cannot write " << path;
  return path.string();
}

// `status` has `code` and a message naming the flag and the path as
// "flag=path".
void ExpectErrorNamingFlagAndPath(const absl::Status& status, absl::StatusCode code,
                                  const std::string& path) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(std::string(kFlag) + "=" + path));
}

TEST(ReadPemFileTest, ReturnsACertificateWhole) {
  TempDir dir("pem_test");
  const std::string path = WriteFile(dir, "cert.pem", kCertificate);
  ASSERT_OK_AND_ASSIGN(const std::string text, ReadPemFile(path, kFlag));
  EXPECT_EQ(text, kCertificate);
}

TEST(ReadPemFileTest, ReturnsAChainAndItsSurroundingTextUnchanged) {
  // A chain of blocks with the explanatory text openssl writes around them,
  // CRLF line ends and no final newline: all of it comes back as written.
  TempDir dir("pem_test");
  const std::string contents = std::string("subject=CN = localhost\r\n") + kCertificate +
                               "\r\n" + kCertificate + kKey + "trailing text";
  const std::string path = WriteFile(dir, "chain.pem", contents);
  ASSERT_OK_AND_ASSIGN(const std::string text, ReadPemFile(path, kFlag));
  EXPECT_EQ(text, contents);
}

TEST(ReadPemFileTest, ReadsBinaryBytesAsTheyAre) {
  // NUL and high bytes before the block are kept: the file is read in
  // binary, never cut at a NUL or translated.
  TempDir dir("pem_test");
  const std::string contents = std::string("\0\xff\x80\n", 4) + kKey;
  const std::string path = WriteFile(dir, "key.pem", contents);
  ASSERT_OK_AND_ASSIGN(const std::string text, ReadPemFile(path, kFlag));
  EXPECT_EQ(text, contents);
  EXPECT_EQ(text.size(), contents.size());
}

TEST(ReadPemFileTest, MissingFileIsNotFoundNamingFlagAndPath) {
  TempDir dir("pem_test");
  const std::string path = (dir / "absent.pem").string();
  const absl::Status status = ReadPemFile(path, kFlag).status();
  ExpectErrorNamingFlagAndPath(status, absl::StatusCode::kNotFound, path);
  // A file inside a directory that does not exist either.
  const std::string nested = (dir / "no_such_dir" / "cert.pem").string();
  ExpectErrorNamingFlagAndPath(ReadPemFile(nested, kFlag).status(), absl::StatusCode::kNotFound,
                               nested);
}

TEST(ReadPemFileTest, TheFlagInTheMessageIsTheOneGiven) {
  TempDir dir("pem_test");
  const std::string path = (dir / "absent.pem").string();
  const absl::Status status = ReadPemFile(path, "--tls_key").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("--tls_key=" + path));
  EXPECT_THAT(std::string(status.message()), ::testing::Not(HasSubstr(kFlag)));
}

TEST(ReadPemFileTest, FileWithoutABeginBlockIsInvalidArgument) {
  TempDir dir("pem_test");
  struct Case {
    std::string name;
    std::string contents;
  };
  const std::vector<Case> cases = {
      {"empty.pem", ""},
      {"text.pem", "this is not a certificate\n"},
      // DER: the binary form of a certificate, not PEM.
      {"cert.der", std::string("\x30\x82\x01\xb3\x30\x82\x01\x59\xa0\x03\x02\x01\x02", 13)},
      // Only the end of a block, and a BEGIN without its space.
      {"end_only.pem", "-----END CERTIFICATE-----\n"},
      {"no_space.pem", "-----BEGINCERTIFICATE-----\n"},
      // Case matters.
      {"lower.pem", "-----begin certificate-----\n"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = WriteFile(dir, c.name, c.contents);
    const absl::Status status = ReadPemFile(path, kFlag).status();
    ExpectErrorNamingFlagAndPath(status, absl::StatusCode::kInvalidArgument, path);
    EXPECT_THAT(std::string(status.message()), HasSubstr("-----BEGIN"));
  }
}

// A directory or a FIFO given as a PEM file is refused, saying so: never a
// crash (a directory throws from the stream) nor a hang (a FIFO blocks).
TEST(ReadPemFileTest, ADirectoryOrAFifoIsRefusedNamingFlagAndPath) {
  TempDir dir("pem_test");
  const std::string fifo = (dir / "fifo.pem").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {dir.string(), fifo}) {
    SCOPED_TRACE(path);
    const absl::Status status = ReadPemFile(path, kFlag).status();
    ExpectErrorNamingFlagAndPath(status, absl::StatusCode::kInvalidArgument, path);
    EXPECT_THAT(std::string(status.message()), HasSubstr("not a regular file"));
  }
}

}  // namespace
}  // namespace sparse
