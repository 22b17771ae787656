// Readiness probe for the local Kafka broker started by deploy/local/kafka.sh.
// Usage: KafkaReady <bootstrap> <timeoutSeconds> [pid]
// Exits 0 once an Admin client gets cluster metadata (a broker, or -Dlogferry.kafka.brokers=N
// of them, and the active controller) from the brokers, 1 on timeout, 2 as soon as the
// process <pid> (the broker) has died.
// One JVM polls for the whole wait so the probe costs one JVM start-up, not one per try.
import java.util.Collection;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

public final class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int brokers = Integer.getInteger("logferry.kafka.brokers", 1);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        ProcessHandle broker = args.length > 2
                ? ProcessHandle.of(Long.parseLong(args[2])).orElse(null) : null;
        if (args.length > 2 && (broker == null || !broker.isAlive())) System.exit(2);

        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "logferry-kafka-ready");
        try (Admin admin = Admin.create(p)) {
            while (true) {
                long leftMs = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                int tryMs = (int) Math.max(250, Math.min(3000, leftMs));
                try {
                    DescribeClusterResult r = admin.describeCluster(
                            new DescribeClusterOptions().timeoutMs(tryMs));
                    Collection<Node> nodes = r.nodes().get(tryMs + 500, TimeUnit.MILLISECONDS);
                    Node controller = r.controller().get(tryMs + 500, TimeUnit.MILLISECONDS);
                    if (nodes.size() >= brokers && controller != null && !controller.isEmpty()) {
                        System.exit(0);
                    }
                } catch (Exception e) {
                    // not ready yet
                }
                if (broker != null && !broker.isAlive()) System.exit(2);
                if (System.nanoTime() > deadline) System.exit(1);
                Thread.sleep(250);
            }
        }
    }
}
