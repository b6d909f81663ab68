// nova-live-snapshot apps guest: a TCP service whose throughput depends on
// the JVM's JIT warm-up. Each request runs the same pure-Java hot path
// (integer mixing over an array, a small sort, a checksum); HotSpot first
// interprets it, then compiles it (C1, then C2), and the request rate grows
// by one to two orders of magnitude on the way. A clone of a warm JVM keeps
// the compiled code; a fresh JVM starts over.
//
// Protocol (one connection per client, many requests per connection):
//   on connect the server sends
//     "JIT label=<label> token=<32 hex> pid=<pid>\n"
//   then, for each line "<n>\n" the client sends, it answers "<checksum>\n".
// The token is random per JVM start: a clone that resumed the warm JVM
// answers with its source's token.
//
// Usage: java -cp DIR JitService PORT LABEL
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;

public final class JitService {
    private static final int SIZE = 2048;

    // The hot path: deterministic work on a fresh array, so that every
    // request costs the same and the answer can be checked.
    static long work(long seed) {
        int[] a = new int[SIZE];
        long x = seed * 0x9E3779B97F4A7C15L + 1;
        for (int i = 0; i < SIZE; i++) {
            x ^= x << 13;
            x ^= x >>> 7;
            x ^= x << 17;
            a[i] = (int) (x & 0x7fffffff);
        }
        // Insertion sort of a slice: branches and array bounds checks that
        // C2 optimises and the interpreter pays in full.
        for (int i = 1; i < 256; i++) {
            int v = a[i];
            int j = i - 1;
            while (j >= 0 && a[j] > v) {
                a[j + 1] = a[j];
                j--;
            }
            a[j + 1] = v;
        }
        long sum = 0;
        for (int r = 0; r < 8; r++) {
            for (int i = 0; i < SIZE; i++) {
                sum = sum * 31 + (a[i] ^ (a[(i + r) % SIZE] >>> 3));
            }
        }
        return sum;
    }

    private static void serve(Socket s, byte[] banner) {
        try (Socket conn = s;
             BufferedReader in = new BufferedReader(new InputStreamReader(
                 conn.getInputStream(), StandardCharsets.US_ASCII));
             OutputStream out = conn.getOutputStream()) {
            conn.setTcpNoDelay(true);
            out.write(banner);
            out.flush();
            String line;
            while ((line = in.readLine()) != null) {
                long seed = Long.parseLong(line.trim());
                out.write((work(seed) + "\n").getBytes(StandardCharsets.US_ASCII));
                out.flush();
            }
        } catch (Exception e) {
            // A client that goes away ends its connection, not the service.
        }
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String label = args[1];
        byte[] t = new byte[16];
        new SecureRandom().nextBytes(t);
        StringBuilder token = new StringBuilder();
        for (byte b : t) {
            token.append(String.format("%02x", b & 0xff));
        }
        byte[] banner = ("JIT label=" + label + " token=" + token + " pid="
                         + ProcessHandle.current().pid() + "\n")
            .getBytes(StandardCharsets.US_ASCII);
        try (ServerSocket srv = new ServerSocket()) {
            srv.setReuseAddress(true);
            srv.bind(new InetSocketAddress(port), 16);
            while (true) {
                Socket s = srv.accept();
                Thread th = new Thread(() -> serve(s, banner));
                th.setDaemon(true);
                th.start();
            }
        }
    }
}
