package org.elasticsearch.plugins;

import java.util.List;

/** The descriptor {@link ClasspathPluginsService} gives a class-path plugin, built with 9.5's constructor (a deployment target more). */
final class ClasspathPluginDescriptor {

    private ClasspathPluginDescriptor() {}

    static PluginDescriptor of(String className, String elasticsearchVersion) {
        String javaVersion = Integer.toString(Runtime.version().feature());
        // no module, no extended plugins; hasNativeController, isLicensed, isModular, isStable all false; any deployment
        return new PluginDescriptor(className, "classpath plugin", "NA", elasticsearchVersion, javaVersion, className, null, List.of(), false, false, false, false, PluginDescriptor.DeploymentTarget.ALL);
    }
}
