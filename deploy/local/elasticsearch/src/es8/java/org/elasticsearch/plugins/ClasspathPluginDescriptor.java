package org.elasticsearch.plugins;

import java.util.List;

/** The descriptor {@link ClasspathPluginsService} gives a class-path plugin, built with 8.19's constructor. */
final class ClasspathPluginDescriptor {

    private ClasspathPluginDescriptor() {}

    static PluginDescriptor of(String className, String elasticsearchVersion) {
        String javaVersion = Integer.toString(Runtime.version().feature());
        // no module, no extended plugins; hasNativeController, isLicensed, isModular, isStable all false
        return new PluginDescriptor(className, "classpath plugin", "NA", elasticsearchVersion, javaVersion, className, null, List.of(), false, false, false, false);
    }
}
