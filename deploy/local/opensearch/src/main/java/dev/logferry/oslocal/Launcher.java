package dev.logferry.oslocal;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.config.Configurator;
import org.opensearch.Build;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.BoundTransportAddress;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Boots one real OpenSearch node in this JVM from the server and module jars on the class path.
 *
 * <p>What it keeps from {@code org.opensearch.bootstrap.OpenSearch}: settings and {@link Environment} preparation,
 * log4j set-up through {@link LogConfigurator}, a {@link Node} and {@link Node#start()}, and an orderly
 * {@link Node#close()} on SIGTERM. What it leaves out: the CLI, keystore, native set-up (mlockall, seccomp),
 * jar-hell checks, the Java security manager and bootstrap checks (which only apply when bound to a non-loopback
 * address anyway). The modules are class path plugins, through the same protected {@link Node} constructor the
 * OpenSearch test framework's MockNode uses: the real HTTP and transport layer ({@link Netty4Plugin}), painless,
 * the common analyzers, the extra field types and reindex. {@code GET /}, index templates and data streams are in
 * the server itself.
 *
 * <p>Options (each also readable from a system property, shown in brackets):
 * <pre>
 *   --home DIR             [logferry.os.home]            node home; data in DIR/data, logs in DIR/logs (required)
 *   --http-port N          [logferry.os.http.port]       default 19202
 *   --transport-port N     [logferry.os.transport.port]  default 19302
 *   --host ADDR            [logferry.os.host]            default 127.0.0.1
 *   --cluster-name NAME    [logferry.os.cluster.name]    default logferry-local
 *   --node-name NAME       [logferry.os.node.name]       default logferry-os-0
 *   -E key=value / -Ekey=value                          any other node setting (repeatable)
 * </pre>
 */
public final class Launcher {

    private static final CountDownLatch STOPPED = new CountDownLatch(1);

    private static final List<Class<? extends Plugin>> MODULES = List.of(
        Netty4Plugin.class,
        PainlessPlugin.class,
        CommonAnalysisPlugin.class,
        MapperExtrasPlugin.class,
        ReindexPlugin.class
    );

    private Launcher() {}

    public static void main(String[] args) throws Exception {
        final PrintStream out = System.out;
        final Map<String, String> opts = new LinkedHashMap<>();
        opts.put("home", System.getProperty("logferry.os.home"));
        opts.put("http-port", System.getProperty("logferry.os.http.port", "19202"));
        opts.put("transport-port", System.getProperty("logferry.os.transport.port", "19302"));
        opts.put("host", System.getProperty("logferry.os.host", "127.0.0.1"));
        opts.put("cluster-name", System.getProperty("logferry.os.cluster.name", "logferry-local"));
        opts.put("node-name", System.getProperty("logferry.os.node.name", "logferry-os-0"));
        final Settings.Builder extra = Settings.builder();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-E") && i + 1 < args.length) {
                putSetting(extra, args[++i]);
            } else if (a.startsWith("-E")) {
                putSetting(extra, a.substring(2));
            } else if (a.startsWith("--")) {
                String key = a.substring(2);
                String value;
                int eq = key.indexOf('=');
                if (eq >= 0) {
                    value = key.substring(eq + 1);
                    key = key.substring(0, eq);
                } else if (i + 1 < args.length) {
                    value = args[++i];
                } else {
                    throw usage("missing value for " + a);
                }
                if (opts.containsKey(key) == false) {
                    throw usage("unknown option " + a);
                }
                opts.put(key, value);
            } else {
                throw usage("unexpected argument " + a);
            }
        }
        if (opts.get("home") == null) {
            throw usage("--home is required");
        }

        final Path home = Path.of(opts.get("home")).toAbsolutePath().normalize();
        final Path config = home.resolve("config");
        final Path data = home.resolve("data");
        final Path logs = home.resolve("logs");
        for (Path p : List.of(config, data, logs, home.resolve("tmp"), home.resolve("plugins"), home.resolve("modules"))) {
            Files.createDirectories(p);
        }
        // LogConfigurator reads every log4j2*.properties file in the config folder.
        try (InputStream in = Launcher.class.getResourceAsStream("log4j2.properties")) {
            Files.copy(in, config.resolve("log4j2.properties"), StandardCopyOption.REPLACE_EXISTING);
        }

        final Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", data.toString())
            .put("path.logs", logs.toString())
            .put("cluster.name", opts.get("cluster-name"))
            .put("node.name", opts.get("node-name"))
            .put("network.host", opts.get("host"))
            .put("http.port", opts.get("http-port"))
            .put("transport.port", opts.get("transport-port"))
            .put("discovery.type", "single-node")
            // tests must not flip indices to read-only because the disk is fuller than a production node would like
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // tests delete indices with wildcards
            .put("action.destructive_requires_name", false)
            .put(extra.build())
            .build();

        final Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> opts.get("node-name"));

        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(env.settings()));
        LogConfigurator.configure(env);
        final Logger logger = LogManager.getLogger(Launcher.class);

        Thread.setDefaultUncaughtExceptionHandler((thread, t) -> {
            logger.error("uncaught exception in thread [" + thread.getName() + "]", t);
            if (t instanceof Error) {
                // like OpenSearchUncaughtExceptionHandler: the JVM is in an unknown state, do not try to recover
                Runtime.getRuntime().halt(t instanceof OutOfMemoryError ? 127 : 1);
            }
        });

        logger.info(
            "logferry launcher: OpenSearch {} (JVM {} {}), home [{}]",
            Build.CURRENT.getQualifiedVersion(),
            System.getProperty("java.vendor"),
            Runtime.version(),
            home
        );

        // true: refuse private index settings in requests, as a production node does
        final Node node = new Node(env, MODULES, true) {};

        Runtime.getRuntime().addShutdownHook(new Thread(() -> shutdown(node, logger), "logferry-os-shutdown"));

        try {
            node.start();
        } catch (Throwable t) {
            logger.error("node failed to start", t);
            Runtime.getRuntime().halt(1);
        }

        BoundTransportAddress http = node.injector().getInstance(HttpServerTransport.class).boundAddress();
        out.println("LOGFERRY_OS_STARTED http=" + http.publishAddress());
        out.flush();

        // OpenSearch's own threads are daemon threads: keep the JVM alive until the shutdown hook has run.
        STOPPED.await();
    }

    private static void shutdown(Node node, Logger logger) {
        try {
            logger.info("stopping ...");
            node.close();
            if (node.awaitClose(20, TimeUnit.SECONDS) == false) {
                logger.warn("node did not close within 20s");
            }
            logger.info("stopped");
        } catch (IOException | InterruptedException | RuntimeException e) {
            logger.warn("failure while stopping the node", e);
        } finally {
            STOPPED.countDown();
            Configurator.shutdown((LoggerContext) LogManager.getContext(false));
        }
    }

    private static void putSetting(Settings.Builder builder, String kv) {
        int eq = kv.indexOf('=');
        if (eq <= 0) {
            throw usage("setting must be key=value: " + kv);
        }
        builder.put(kv.substring(0, eq), kv.substring(eq + 1));
    }

    private static IllegalArgumentException usage(String why) {
        return new IllegalArgumentException(
            why + "\nusage: Launcher --home DIR [--http-port N] [--transport-port N] [--host ADDR]"
                + " [--cluster-name NAME] [--node-name NAME] [-E key=value ...]"
        );
    }
}
